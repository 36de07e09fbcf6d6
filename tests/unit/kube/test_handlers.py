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


def child(kind: str, owner: str, label: str, controller: bool = True) -> kopf.Body:
    return kopf.Body(
        {
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
            }
        }
    )


async def test_a_stage_job_kicks_its_controlling_run() -> None:
    controller = Controller()
    memo: Any = {"controller": controller}
    await handlers.stage_job_changed(body=child("PipelineRun", LONG, "pipelinerun"), memo=memo)
    await handlers.stage_job_changed(
        body=child("PipelineRun", "x", "pipelinerun", controller=False), memo=memo
    )
    await handlers.stage_job_changed(body=child("ModelDeployment", "x", "pipelinerun"), memo=memo)
    assert controller.kicked == [("ml", LONG)]


async def test_a_model_server_reconciles_its_controlling_modeldeployment() -> None:
    controller = Controller()
    memo: Any = {"controller": controller}
    await handlers.model_server_changed(body=child("ModelDeployment", LONG, "modeldeployment"), memo=memo)
    await handlers.model_server_changed(body=child("PipelineRun", "x", "modeldeployment"), memo=memo)
    assert controller.deployments.reconciled == [("ml", LONG)]
