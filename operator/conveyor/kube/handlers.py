"""Kopf handlers: each reads what it needs and delegates. Importing this module registers them."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from conveyor.api.common import GROUP, VERSION
from conveyor.api.pipelinerun import FINISHED_RUN_PHASES
from conveyor.engine.names import MANAGED_BY
from conveyor.kube.client import KubeClient
from conveyor.kube.controller import MODEL_DEPLOYMENT, PIPELINE, Controller
from conveyor.kube.credentials import Connection
from conveyor.kube.observe import controller_of


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = 30  # logging.WARNING: Kopf posts only its problems as events
    # store reads and writes (boto3 blocks) run in threads: many runs' reconciles at once must
    # not queue behind asyncio's default of cpu_count + 4 threads
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="store"))
    settings.watching.server_timeout = 300
    if "controller" not in memo:  # the settings `conveyor operator` parsed once, at start
        memo["controller"] = Controller(memo["settings"], KubeClient(Connection.from_environment()))


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The ServiceAccount in a pod, else $KUBECONFIG as it is when the operator starts (Kopf's
    own loaders; the `kubernetes` package's would read $KUBECONFIG once, at import)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo["controller"].close()


def _needs_a_look(type: str | None, body: kopf.Body) -> bool:
    """Whether a watch event is news to the operator: the object appeared (or the operator
    started and lists it), or its spec changed; not the echo of the operator's own status write."""
    if type == "DELETED":
        return False
    status = body.get("status") or {}
    return type in (None, "ADDED") or status.get("observedGeneration") != body.metadata.get("generation")


# Watch events, not Kopf's change/timer handlers: those make Kopf add a finalizer to every
# object, so deleting a namespace hangs while the operator is down. Periodic looks (timeouts,
# schedules, drift) are the controller's requeues, set after each reconcile.
@kopf.on.event(GROUP, VERSION, "pipelineruns")
async def pipelinerun_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    status = body.get("status") or {}
    decided = (status.get("model") or {}).get("approval") == "Pending" and (body.get("spec") or {}).get(
        "approval"
    )  # a finished run's model waits for approval, and a human has just decided on it
    if status.get("phase") in FINISHED_RUN_PHASES and not decided:
        return
    if _needs_a_look(type, body):  # cancelling changes the spec, so the generation
        await memo["controller"].kick_run(body.metadata.namespace or "default", body.metadata.name)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def stage_job_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A stage's Job finished (or went): its run moves on. The Job controller writes a Job's
    status several times per attempt; only its end is news (retries are seen on the resync)."""
    run = controller_of(body, "PipelineRun")  # labels may hold a hash of a long name
    if run and body.metadata.namespace and (type == "DELETED" or _job_finished(body)):
        await memo["controller"].kick_run(body.metadata.namespace, run["name"])


def _job_finished(body: kopf.Body) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


@kopf.on.event(GROUP, VERSION, "pipelines")
async def pipeline_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    if _needs_a_look(type, body):
        memo["controller"].kick(PIPELINE, body.metadata.namespace or "default", body.metadata.name)


@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def modeldeployment_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    if _needs_a_look(type, body):
        memo["controller"].kick(MODEL_DEPLOYMENT, body.metadata.namespace or "default", body.metadata.name)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def model_server_changed(body: kopf.Body, memo: Any, **_: Any) -> None:
    owner = controller_of(body, "ModelDeployment")
    if owner and body.metadata.namespace:
        memo["controller"].kick(MODEL_DEPLOYMENT, body.metadata.namespace, owner["name"])
