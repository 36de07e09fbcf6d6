"""The PipelineRun CRD's rules for `spec.approval`, evaluated as the API server would (CEL):
it may be added to a run once, never changed or removed, and a rejection needs a reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.k8s import validate_custom

RUN: dict[str, Any] = {
    "apiVersion": "conveyor.dev/v1alpha1",
    "kind": "PipelineRun",
    "metadata": {"name": "r"},
    "spec": {"pipelineRef": {"name": "p"}},
}
APPROVE = {"decision": "Approve", "by": "alice", "reason": ""}
REJECT = {"decision": "Reject", "by": "carol", "reason": "fails the bias review"}
ONCE = "spec: spec.approval is set once: a decision cannot be changed or withdrawn"


def _with(approval: dict[str, Any] | None) -> dict[str, Any]:
    run = copy.deepcopy(RUN)
    if approval is not None:
        run["spec"]["approval"] = approval
    return run


@pytest.mark.parametrize(
    ("old", "new", "errors"),
    [
        pytest.param(None, APPROVE, [], id="approve-a-waiting-run"),
        pytest.param(None, REJECT, [], id="reject-a-waiting-run"),
        pytest.param(APPROVE, APPROVE, [], id="unchanged"),
        pytest.param(APPROVE, REJECT, [ONCE], id="approval-turned-into-rejection"),
        pytest.param(REJECT, {**REJECT, "reason": "other"}, [ONCE], id="reason-rewritten"),
        pytest.param(APPROVE, None, [ONCE], id="approval-withdrawn"),
    ],
)  # fmt: skip
def test_approval_is_set_once(
    old: dict[str, Any] | None, new: dict[str, Any] | None, errors: list[str]
) -> None:
    assert validate_custom(_with(new), old=_with(old)) == errors


def test_a_rejection_needs_a_reason() -> None:
    problems = validate_custom(_with({"decision": "Reject", "by": "carol", "reason": ""}))
    assert problems == ["spec.approval: a rejection needs a reason: set spec.approval.reason"]


def test_a_decision_names_who_made_it() -> None:
    assert any("by" in p for p in validate_custom(_with({"decision": "Approve"})))
