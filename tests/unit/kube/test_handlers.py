"""Kopf handlers find the owner of a child from its controller ownerReference: a label value
may be a hash of a long name, never the name itself."""

from __future__ import annotations

from typing import Any

import kopf

from conveyor.engine.names import label_value
from conveyor.kube import handlers

LONG = "r" * 100


class Deployments:
    def __init__(self) -> None:
        self.reconciled: list[tuple[str, str]] = []

    async def reconcile(self, namespace: str, name: str) -> None:
        self.reconciled.append((namespace, name))


class Controller:
    def __init__(self) -> None:
        self.kicked: list[tuple[str, str]] = []
        self.deployments = Deployments()

    async def kick_run(self, namespace: str, name: str) -> None:
        self.kicked.append((namespace, name))

    def kick(self, kind: str, namespace: str, name: str) -> None:
        self.deployments.reconciled.append((namespace, name))


def child(kind: str, owner: str, label: str, controller: bool = True, status: Any = None) -> kopf.Body:
    return kopf.Body(
        {
            "status": status or {},
            "metadata": {
                "name": "child",
                "namespace": "ml",
                "labels": {f"conveyor.dev/{label}": label_value(owner)},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "u0"},
                    {
                        "apiVersion": "conveyor.dev/v1alpha1",
                        "kind": kind,
                        "name": owner,
                        "uid": "u1",
                        "controller": controller,
                    },
                ],
            },
        }
    )


DONE = {"conditions": [{"type": "Complete", "status": "True"}]}
FAILED = {"conditions": [{"type": "Failed", "status": "True"}]}
ACTIVE = {"active": 1, "conditions": [{"type": "Failed", "status": "False"}]}


async def test_a_stage_job_kicks_its_controlling_run_when_it_ends() -> None:
    controller = Controller()
    memo: Any = {"controller": controller}
    job = handlers.stage_job_changed
    await job(type="MODIFIED", body=child("PipelineRun", LONG, "pipelinerun", status=DONE), memo=memo)
    await job(type="MODIFIED", body=child("PipelineRun", "f", "pipelinerun", status=FAILED), memo=memo)
    await job(type="DELETED", body=child("PipelineRun", "d", "pipelinerun", status=ACTIVE), memo=memo)
    await job(type="MODIFIED", body=child("PipelineRun", "a", "pipelinerun", status=ACTIVE), memo=memo)
    await job(
        type=None, body=child("PipelineRun", "x", "pipelinerun", controller=False, status=DONE), memo=memo
    )
    await job(type=None, body=child("ModelDeployment", "x", "pipelinerun", status=DONE), memo=memo)
    assert controller.kicked == [("ml", LONG), ("ml", "f"), ("ml", "d")]


async def test_a_model_server_reconciles_its_controlling_modeldeployment() -> None:
    controller = Controller()
    memo: Any = {"controller": controller}
    await handlers.model_server_changed(body=child("ModelDeployment", LONG, "modeldeployment"), memo=memo)
    await handlers.model_server_changed(body=child("PipelineRun", "x", "modeldeployment"), memo=memo)
    assert controller.deployments.reconciled == [("ml", LONG)]


def run_body(phase: str, approval: str | None, decided: bool, generation: int = 2) -> kopf.Body:
    spec: dict[str, Any] = {"pipelineRef": {"name": "p"}}
    if decided:
        spec["approval"] = {"decision": "Approve", "by": "alice"}
    status: dict[str, Any] = {"phase": phase, "observedGeneration": 1}
    if approval:
        status["model"] = {"uri": "s3://b/m", "sha256": "0" * 64, "approval": approval}
    return kopf.Body(
        {
            "spec": spec,
            "status": status,
            "metadata": {"name": "r", "namespace": "ml", "generation": generation},
        }
    )


async def test_a_decision_on_a_finished_run_awaiting_approval_is_news() -> None:
    controller = Controller()
    memo: Any = {"controller": controller}
    await handlers.pipelinerun_changed(
        type="MODIFIED", body=run_body("Succeeded", "Pending", True), memo=memo
    )
    assert controller.kicked == [("ml", "r")]
    for body in (
        run_body("Succeeded", "Pending", False),  # still waiting: nothing to do
        run_body("Succeeded", "Approved", True),  # decided and carried out already
        run_body("Failed", None, False),
    ):
        await handlers.pipelinerun_changed(type="MODIFIED", body=body, memo=memo)
    assert controller.kicked == [("ml", "r")]
