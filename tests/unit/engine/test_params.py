import pytest

from conveyor.engine.params import UnresolvedParam, references, substitute


def test_whole_reference_takes_the_yaml_type() -> None:
    opts = {"gate": {"min": "$(params.acc)"}, "n": "$(params.n)", "flag": "$(params.f)"}
    out = substitute(opts, {"acc": "0.9", "n": "5", "f": "true"})
    assert out == {"gate": {"min": 0.9}, "n": 5, "flag": True}


def test_embedded_reference_stays_a_string() -> None:
    assert substitute({"source": "s3://b/$(params.day)/x.csv"}, {"day": "2026-01-01"}) == {
        "source": "s3://b/2026-01-01/x.csv"
    }


def test_unresolved_reference_names_the_path() -> None:
    with pytest.raises(UnresolvedParam) as err:
        substitute({"a": [{"b": "$(params.nope)"}]}, {})
    assert err.value.name == "nope"
    assert err.value.path == ".a[0].b"


def test_references_lists_names_and_paths() -> None:
    assert references({"x": ["$(params.a) $(params.b)"]}) == [("a", ".x[0]"), ("b", ".x[0]")]
