"""The PipelineRun reconciler on a finished run whose model awaits approval: nothing happens
until `spec.approval` is set; then the decision is applied once (the champion swapped, or the
rejection recorded), the AwaitingApproval condition flips and one event says so. The API
server is a small fake: this checks the reconciler's logic, the control-plane tests its wiring."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor.api.pipelinerun import PipelineRunStatus, RunPhase
from conveyor.artifacts import champion as champions
from conveyor.artifacts.layout import read_run_record
from conveyor.artifacts.store import LocalStore, Store
from conveyor.kube.reconcilers.pipelinerun import PipelineRunReconciler
from conveyor.kube.settings import Settings
from tests.unit.runs.test_approval import NS, PIPE, pending

NOW = datetime(2026, 1, 2, tzinfo=UTC)
PIPELINE_SPEC = {"stages": [{"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}}]}


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class FakeKube:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.events: list[tuple[str, str, str]] = []

    async def get(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.body)

    async def patch(self, res: Any, namespace: str | None, name: str, patch: dict[str, Any], **_: Any) -> Any:
        self.body = _merge(self.body, patch)
        return copy.deepcopy(self.body)

    async def post_event(self, body: Any, type_: str, reason: str, message: str, now: datetime) -> None:
        self.events.append((type_, reason, message))


class FakeStores:
    def __init__(self, store: Store) -> None:
        self.store = store

    def for_pipeline(self, spec: Any) -> tuple[Store, Any]:
        return self.store, None


def _run(approval: dict[str, Any] | None) -> dict[str, Any]:
    status = PipelineRunStatus.model_validate(
        {
            "phase": RunPhase.SUCCEEDED,
            "pipelineSpec": PIPELINE_SPEC,
            "model": {"uri": "u", "sha256": "s", "approval": "Pending", "decision": "awaits approval"},
            "conditions": [
                {"type": "AwaitingApproval", "status": "True", "reason": "AwaitingApproval",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
        }
    )  # fmt: skip
    spec: dict[str, Any] = {"pipelineRef": {"name": PIPE}}
    if approval is not None:
        spec["approval"] = approval
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "r1", "namespace": NS, "uid": "u1", "generation": 2, "resourceVersion": "7"},
        "spec": spec,
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def _reconcile(store: Store, body: dict[str, Any]) -> tuple[FakeKube, Any]:
    kube = FakeKube(body)
    reconciler = PipelineRunReconciler(kube, Settings(), FakeStores(store), clock=lambda: NOW)  # type: ignore[arg-type]
    return kube, asyncio.run(reconciler.reconcile(NS, "r1"))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return LocalStore(tmp_path / "store")


def test_a_waiting_run_without_a_decision_is_left_alone(store: Store) -> None:
    pending(store, "r1", {"accuracy": 0.9})
    body = _run(None)
    kube, outcome = _reconcile(store, body)
    assert outcome.finished and outcome.pipeline is None  # no follow-up: nothing changed
    assert kube.body == body and kube.events == []
    assert champions.current(store, NS, PIPE).champion is None


def test_an_approval_promotes_flips_the_condition_and_kicks_the_followers(store: Store) -> None:
    pending(store, "r1", {"accuracy": 0.9})
    kube, outcome = _reconcile(store, _run({"decision": "Approve", "by": "alice"}))
    assert outcome.finished and outcome.pipeline == PIPE  # ModelDeployments following it look again
    champ = champions.current(store, NS, PIPE).champion
    assert champ is not None and (champ.run, champ.approved_by) == ("r1", "alice")
    status = kube.body["status"]
    assert status["model"]["approval"] == "Approved" and status["model"]["promoted"] is True
    assert status["model"]["version"] == 1 and status["observedGeneration"] == 2
    cond = next(c for c in status["conditions"] if c["type"] == "AwaitingApproval")
    assert (cond["status"], cond["reason"]) == ("False", "Approved")
    assert [(t, r) for t, r, _ in kube.events] == [("Normal", "Approved")]
    # the same object looked at again: the decision is not applied twice, no new event
    again, _ = _reconcile(store, kube.body)
    assert again.events == [] and len(champions.list_versions(store, NS, PIPE)) == 1


def test_a_rejection_is_recorded_with_its_reason(store: Store) -> None:
    pending(store, "r1", {"accuracy": 0.9})
    kube, _ = _reconcile(store, _run({"decision": "Reject", "by": "carol", "reason": "bias review"}))
    assert champions.current(store, NS, PIPE).champion is None
    model = kube.body["status"]["model"]
    assert (model["approval"], model["approvedBy"], model["approvalReason"]) == (
        "Rejected",
        "carol",
        "bias review",
    )
    record = read_run_record(store, NS, PIPE, "r1")
    assert record is not None and record.model is not None and record.model.approval == "Rejected"
    assert [r for _, r, _ in kube.events] == ["Rejected"]


def test_resuming_from_a_run_that_does_not_exist_is_refused(store: Store) -> None:
    body = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "r1", "namespace": NS, "uid": "u1", "generation": 1, "resourceVersion": "7"},
        "spec": {"pipelineSpec": PIPELINE_SPEC, "resumeFrom": {"run": "no-such-run"}},
    }
    kube, outcome = _reconcile(store, body)
    assert outcome.finished
    status = kube.body["status"]
    (succeeded,) = status["conditions"]
    assert (status["phase"], succeeded["reason"]) == ("Failed", "InvalidSpec"), status
    assert "spec.resumeFrom.run" in succeeded["message"] and "no run 'no-such-run'" in succeeded["message"]
