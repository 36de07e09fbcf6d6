"""The evaluate stage with `promotion: Manual`: a model that passes is decided on as usual but
not promoted; it is written as the `candidate` that approving promotes, and the run's model
record says Pending."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.artifacts import champion as champions
from conveyor.runs.context import model_record
from tests.unit.stages.test_promotion import _decision, _two_models

MANUAL = {"gate": {"metric": "accuracy", "min": 0.1}, "compareTo": "champion", "promotion": "Manual"}


def test_a_passing_model_waits_as_the_candidate(tmp_path: Path) -> None:
    chain = _two_models(tmp_path)
    result = chain.run("evaluate", "evaluate", MANUAL, ["strong"])
    decision = _decision(chain, "evaluate")
    assert decision["passed"] and not decision["promoted"] and decision["awaiting_approval"]
    assert "awaits approval" in decision["reason"]
    assert champions.current(chain.store, "ns", "p").champion is None  # nothing swapped
    raw: dict[str, Any] = json.loads(chain.store.read_bytes(chain.store.key(result.outputs["candidate"].uri)))
    assert raw["champion"]["model"] == chain.outputs["strong"]["model"].model_dump(mode="json")
    assert raw["champion"]["metrics"]["accuracy"] == result.metrics["accuracy"]
    assert raw["options"]["promotion"] == "Manual" and raw["options"]["compareTo"] == "champion"
    record = model_record(chain.store, [("evaluate", result)])
    assert record is not None and (record.approval, record.promoted, record.version) == (
        "Pending",
        False,
        None,
    )


@pytest.mark.parametrize(
    ("options", "why"),
    [
        pytest.param({**MANUAL, "gate": {"metric": "accuracy", "min": 0.999}}, "< min", id="gate-fails"),
        pytest.param({**MANUAL, "promote": False}, "passes", id="promote-false"),
    ],
)
def test_a_model_that_would_not_be_promoted_does_not_wait(
    tmp_path: Path, options: dict[str, Any], why: str
) -> None:
    chain = _two_models(tmp_path)
    result = chain.run("evaluate", "evaluate", options, ["weak"])
    decision = _decision(chain, "evaluate")
    assert not decision["awaiting_approval"] and why in decision["reason"]
    assert "candidate" not in result.outputs
    record = model_record(chain.store, [("evaluate", result)])
    assert record is not None and record.approval is None
