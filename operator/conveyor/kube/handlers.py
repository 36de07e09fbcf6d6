"""Kopf handlers: each reads what it needs and delegates. Importing this module registers them."""

from __future__ import annotations

from typing import Any

import kopf

from conveyor.api.common import GROUP, VERSION
from conveyor.api.pipelinerun import FINISHED_RUN_PHASES
from conveyor.engine.names import MANAGED_BY
from conveyor.kube.controller import Controller

RESYNC_SECONDS = 30.0  # safety net; the controller requeues precisely on its own
DRIFT_SECONDS = 15.0  # how often a ModelDeployment's drift score is read


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="conveyor.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="conveyor.dev", key="last-handled-configuration"
    )
    settings.posting.level = 30  # logging.WARNING: Kopf posts only its problems as events
    settings.watching.server_timeout = 300
    if "controller" not in memo:
        memo["controller"] = Controller.from_environment()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo["controller"].close()


def _not_finished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in FINISHED_RUN_PHASES


@kopf.on.resume(GROUP, VERSION, "pipelineruns", when=_not_finished)
@kopf.on.create(GROUP, VERSION, "pipelineruns")
@kopf.on.update(GROUP, VERSION, "pipelineruns", field="spec.cancelled")
@kopf.timer(GROUP, VERSION, "pipelineruns", interval=RESYNC_SECONDS, when=_not_finished)
async def reconcile_pipelinerun(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    await memo["controller"].reconcile_run(namespace or "default", name)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def stage_job_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    run = body.metadata.labels.get(f"{GROUP}/pipelinerun")
    if run and body.metadata.namespace:
        await memo["controller"].kick_run(body.metadata.namespace, run)


@kopf.on.resume(GROUP, VERSION, "pipelines")
@kopf.on.create(GROUP, VERSION, "pipelines")
@kopf.on.update(GROUP, VERSION, "pipelines", field="spec")
@kopf.timer(GROUP, VERSION, "pipelines", interval=RESYNC_SECONDS)
async def reconcile_pipeline(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    await memo["controller"].pipelines.reconcile(namespace or "default", name)


@kopf.on.resume(GROUP, VERSION, "modeldeployments")
@kopf.on.create(GROUP, VERSION, "modeldeployments")
@kopf.on.update(GROUP, VERSION, "modeldeployments", field="spec")
@kopf.timer(GROUP, VERSION, "modeldeployments", interval=DRIFT_SECONDS)
async def reconcile_modeldeployment(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    await memo["controller"].deployments.reconcile(namespace or "default", name)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def model_server_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    owner = body.metadata.labels.get(f"{GROUP}/modeldeployment")
    if owner and body.metadata.namespace:
        await memo["controller"].deployments.reconcile(body.metadata.namespace, owner)
