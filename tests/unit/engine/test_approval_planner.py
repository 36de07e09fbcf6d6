"""`plan_approval`: the AwaitingApproval condition and its events from the run's model; and the
PipelineRun's `spec.approval` as the pydantic model checks it (the CRD's CEL rules:
tests/unit/api/test_approval_crd.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.api.common import Condition
from conveyor.api.pipelinerun import ModelRecord, PipelineRunSpec, PipelineRunStatus, RunPhase
from conveyor.engine.planner import AWAITING_APPROVAL, plan_approval

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
WAIT = "AwaitingApproval"


def _status(approval: str | None, before: str | None = None) -> PipelineRunStatus:
    model = ModelRecord(uri="file:///m", sha256="x", decision="passes; approved by alice", approval=approval)
    conditions = []
    if before is not None:
        status = "True" if before == "AwaitingApproval" else "False"
        conditions.append(
            Condition(type=AWAITING_APPROVAL, status=status, reason=before, last_transition_time=T0)
        )
    return PipelineRunStatus(phase=RunPhase.SUCCEEDED, model=model, conditions=conditions)


@pytest.mark.parametrize(
    ("approval", "before", "expected", "event"),
    [
        pytest.param(None, None, None, None, id="auto-promotion-no-condition"),
        pytest.param("Pending", None, ("True", WAIT, T1), WAIT, id="starts-waiting"),
        pytest.param("Pending", WAIT, ("True", WAIT, T0), None, id="still-waiting"),
        pytest.param("Approved", WAIT, ("False", "Approved", T1), "Approved", id="approved"),
        pytest.param("Rejected", WAIT, ("False", "Rejected", T1), "Rejected", id="rejected"),
        pytest.param("Approved", "Approved", ("False", "Approved", T0), None, id="approved-seen-again"),
    ],
)  # fmt: skip
def test_the_awaiting_approval_condition(
    approval: str | None, before: str | None, expected: tuple[str, str, datetime] | None, event: str | None
) -> None:
    plan = plan_approval(_status(approval, before), 2, T1)
    cond = next((c for c in plan.status.conditions if c.type == AWAITING_APPROVAL), None)
    if expected is None:
        assert cond is None and plan.events == []
        return
    assert cond is not None and (cond.status, cond.reason, cond.last_transition_time) == expected
    assert cond.observed_generation == 2 and plan.status.observed_generation == 2
    assert [r for r, _ in plan.events] == ([event] if event else [])
    if approval == "Pending":
        assert "spec.approval" in cond.message  # says how to decide


SPEC: dict[str, Any] = {"pipelineRef": {"name": "p"}}


@pytest.mark.parametrize(
    ("approval", "error"),
    [
        pytest.param({"decision": "Approve", "by": "alice"}, None, id="approve"),
        pytest.param({"decision": "Reject", "by": "alice", "reason": "bias"}, None, id="reject-with-reason"),
        pytest.param({"decision": "Reject", "by": "alice"}, "needs a reason", id="reject-no-reason"),
        pytest.param({"decision": "Approve"}, "by", id="no-by"),
        pytest.param({"decision": "Maybe", "by": "alice"}, "decision", id="bad-decision"),
    ],
)  # fmt: skip
def test_spec_approval(approval: dict[str, Any], error: str | None) -> None:
    if error is None:
        assert PipelineRunSpec.model_validate({**SPEC, "approval": approval}).approval is not None
    else:
        with pytest.raises(ValidationError, match=error):
            PipelineRunSpec.model_validate({**SPEC, "approval": approval})
