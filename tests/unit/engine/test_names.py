"""Names and label values derived from object names: valid for a real API server, and unique."""

from __future__ import annotations

import re

import pytest

from conveyor.engine.names import child_name, dns1035_label, label_value, standard_labels

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# Valid object names (DNS-1123 subdomains, up to 253 characters) a label can't hold as they are.
LONG = [
    "a" * 64,
    "a" * 253,
    "a" * 40 + "-one-" + "b" * 30,
    "a" * 40 + "-two-" + "b" * 30,
    "a" * 62 + "-.b",
    "x." * 40 + "y",
]


def test_a_valid_label_value_is_kept() -> None:
    for name in ("r1", "a" * 63, "my.run-1", "A_b"):
        assert label_value(name) == name


@pytest.mark.parametrize("name", LONG)
def test_label_value_of_a_long_name_is_valid(name: str) -> None:
    value = label_value(name)
    assert len(value) <= 63 and LABEL_VALUE.match(value), value


def test_label_values_of_long_names_are_unique_and_stable() -> None:
    values = [label_value(n) for n in LONG]
    assert len(set(values)) == len(LONG)
    assert values == [label_value(n) for n in LONG]
    # names sharing their first 40 (or 60) characters stay apart
    assert label_value("a" * 60 + "-1" + "c" * 10) != label_value("a" * 60 + "-2" + "c" * 10)


def test_standard_labels_of_a_long_name_are_valid() -> None:
    labels = standard_labels(component="stage", instance="r" * 200, run="r" * 200, pipeline="p" * 100)
    assert all(len(v) <= 63 and LABEL_VALUE.match(v) for v in labels.values())


@pytest.mark.parametrize(
    ("parent", "suffix"),
    [("r" * 60, "evaluate"), ("my.run", "train"), ("a" * 253, "s"), ("x." * 40 + "y", "stage-1")],
)
def test_child_name_is_a_dns_label(parent: str, suffix: str) -> None:
    name = child_name(parent, suffix)
    assert len(name) <= 63 and DNS1123_LABEL.match(name), name
    assert name != child_name(parent + "x", suffix)


def test_child_name_of_a_valid_short_name_is_plain() -> None:
    assert child_name("run-1", "train") == "run-1-train"
    assert child_name("r" * 50, "train") == "r" * 50 + "-train"


@pytest.mark.parametrize("name", ["m", "model-1", "a" * 63])
def test_dns1035_label_keeps_a_valid_name(name: str) -> None:
    assert dns1035_label(name) == name


@pytest.mark.parametrize("name", ["1model", "a" * 64, "a" * 253, "my.model", "9" * 63])
def test_dns1035_label_makes_a_service_name(name: str) -> None:
    value = dns1035_label(name)
    assert len(value) <= 63 and DNS1035_LABEL.match(value), value
    assert value != dns1035_label(name + "0")
