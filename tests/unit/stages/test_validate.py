"""Inferred expectations: a numeric column's range is inferred with headroom, so data may move
but an impossible value is refused; the stage's outputs depend only on the data and the
expectations checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from conveyor.artifacts import expectations as learned
from conveyor.stages.context import StageError
from conveyor.stages.validate import check, infer
from tests.unit.stages.test_stages import Chain


@pytest.mark.parametrize(
    ("observed", "value", "ok"),
    [
        pytest.param([32.1, 45.0, 59.6], -50.0, False, id="a-negative-bill-length"),
        pytest.param([32.1, 45.0, 59.6], 15.0, False, id="below-the-headroom"),
        pytest.param([1.0, 2.0, 3.0], 0.0, True, id="the-headroom-reaches-zero"),
        pytest.param([1.0, 2.0, 3.0], -0.5, False, id="but-not-below-it-for-a-column-never-negative"),
        pytest.param([32.1, 45.0, 59.6], 70.0, True, id="a-little-beyond-the-largest"),
        pytest.param([32.1, 45.0, 59.6], 500.0, False, id="far-beyond-the-largest"),
        pytest.param([-3.0, 1.0, 5.0], -6.0, True, id="a-signed-column-may-go-lower"),
        pytest.param([7.0, 7.0, 7.0], 9.0, True, id="a-constant-column-gets-half-its-value"),
        pytest.param([7.0, 7.0, 7.0], 20.0, False, id="but-not-three-times-it"),
    ],
)
def test_an_inferred_range_refuses_what_could_not_be(observed: list[float], value: float, ok: bool) -> None:
    expectations = infer(pd.DataFrame({"bill_length_mm": observed}))
    problems = check(pd.DataFrame({"bill_length_mm": [value]}), expectations)
    assert (problems == []) is ok, problems
    if not ok:
        assert "bill_length_mm" in problems[0]


def test_strings_get_no_range() -> None:
    column = infer(pd.DataFrame({"island": ["Biscoe", "Dream"]})).columns["island"]
    assert (column.min, column.max, column.allowed) == (None, None, ["Biscoe", "Dream"])


def test_learning_now_or_having_learned_earlier_gives_the_same_outputs(tmp_path: Path) -> None:
    """The outputs say what was checked against what: a second run (expectations learned by
    the first) writes the same bytes, so the stages after it find their cached results. The
    report said "inferred now" then "inferred earlier", and every later stage ran again."""
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": "sklearn://iris"}, [])
    first = chain.run("validate", "validate", {}, ["ingest"]).outputs
    kept = chain.store.read_bytes(learned.key("ns", "p", "validate"))
    second = chain.run("validate", "validate", {}, ["ingest"], run="again").outputs
    assert {n: r.sha256 for n, r in second.items()} == {n: r.sha256 for n, r in first.items()}
    assert hashlib.sha256(kept).hexdigest() == first["expectations"].sha256  # one form, one digest
    assert (
        json.loads(chain.store.read_bytes(chain.store.key(first["report"].uri)))["expectations"] == "inferred"
    )


def test_corrupt_learned_expectations_fail_the_stage_naming_the_file(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": "sklearn://iris"}, [])
    chain.store.write_bytes(learned.key("ns", "p", "validate"), b"{not json", "application/json")
    with pytest.raises(StageError, match=r"ns/p/expectations/validate.json does not hold data expectations"):
        chain.run("validate", "validate", {}, ["ingest"])
