"""A model server's rollout, read the way `kubectl rollout status` reads a Deployment, and what
to serve when a rollout fails. Pure.

A rollout is complete only when the controller has observed the Deployment's current
generation (right after a spec change the status still shows the old generation's numbers,
all available), every wanted replica is updated, no old replica is left, and every updated
one is available. It failed when, for the current generation, the `Progressing` condition is
False with reason `ProgressDeadlineExceeded`. A model is recorded as good only when the
rollout of that very model (the one in the pod template) is complete; a model whose rollout
failed is never recorded as good, and the last good model is served instead if it is another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.api.common import Reason

DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


@dataclass(frozen=True)
class ModelRef:
    uri: str
    sha256: str
    version: str = ""


@dataclass(frozen=True)
class Rollout:
    """What a Deployment says about the rollout of its pod template."""

    model: str | None  # the model (its SHA-256) in the pod template
    replicas: int  # spec.replicas
    ready: int
    available: bool  # the Available condition
    complete: bool
    failed: bool
    progress: str  # what it waits for, or "complete"


@dataclass(frozen=True)
class Cond:
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class RolloutPlan:
    serve: ModelRef  # what the pod template must hold
    update: bool  # create or patch the Deployment first
    good: ModelRef | None  # its rollout is complete: it serves, and is the last good model
    failed_sha256: str | None  # a model whose rollout failed: not rolled out again
    progressing: Cond
    ready: Cond


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def _progress(dep: Mapping[str, Any], replicas: int) -> tuple[str, bool]:
    """kubectl's reading (polymorphichelpers/rollout_status.go): (what it waits for, failed)."""
    status = dep.get("status") or {}
    generation = int((dep.get("metadata") or {}).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return f"waiting for the Deployment controller to observe generation {generation}", False
    progressing = _condition(status, "Progressing")
    if progressing.get("reason") == DEADLINE_EXCEEDED:
        return str(progressing.get("message") or "progress deadline exceeded"), True
    total, updated, available = (
        int(status.get(k) or 0) for k in ("replicas", "updatedReplicas", "availableReplicas")
    )
    if updated != replicas:
        return f"{updated} of {replicas} new replicas updated", False
    if total != updated:
        return f"{total - updated} old replicas pending termination", False
    if available != updated:
        return f"{available} of {updated} updated replicas available", False
    return "complete", False


def read_rollout(dep: Mapping[str, Any], model_annotation: str) -> Rollout:
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    model = annotations.get(model_annotation)
    progress, failed = _progress(dep, replicas)
    return Rollout(
        model=str(model) if model is not None else None,
        replicas=replicas,
        ready=int(status.get("readyReplicas") or 0),
        available=_condition(status, "Available").get("status") == "True",
        complete=progress == "complete",
        failed=failed,
        progress=progress,
    )


def plan_rollout(
    target: ModelRef,
    rollout: Rollout | None,
    replicas: int,
    last_good: ModelRef | None,
    failed_sha256: str | None,
) -> RolloutPlan:
    """What to serve and what the status says, from the model wanted (`target`), what the
    Deployment shows (None: there is none yet) and what the status recorded before."""
    failed = failed_sha256
    if rollout is not None and rollout.failed and rollout.model == target.sha256:
        failed = target.sha256
    back = failed == target.sha256 and last_good is not None and last_good.sha256 != target.sha256
    serve = last_good if back and last_good is not None else target
    update = rollout is None or rollout.model != serve.sha256 or rollout.replicas != replicas
    if rollout is not None and not update and rollout.complete:
        failed = None if failed == serve.sha256 else failed  # it became ready after all
        done = Cond("False", Reason.SUCCEEDED, f"serving model {serve.uri}")
        progressing = _failed(target, f"serving the last good model {serve.uri}") if back else done
        ready = Cond("True", Reason.AVAILABLE, f"serving model {serve.uri} on {rollout.ready} replica(s)")
        return RolloutPlan(serve, False, serve, failed, progressing, ready)
    if back:
        # Before `rollout.failed`: the controller keeps a deadline's condition sticky until
        # the rollback completes, so it reports it for the rolled-back generation too.
        progressing = _failed(target, f"rolling back to the last good model {serve.uri}")
    elif rollout is not None and not update and rollout.failed:
        progressing = _failed(serve, _no_rollback(last_good))
    else:
        waiting = "" if update or rollout is None else f": {rollout.progress}"
        progressing = Cond("True", Reason.ROLLING_OUT, f"rolling out model {serve.uri}{waiting}")
    # While a rollout is under way the previous model's pods keep serving.
    serving = last_good is not None and rollout is not None and rollout.available
    ready = Cond("True" if serving else "False", progressing.reason, progressing.message)
    return RolloutPlan(serve, update, None, failed, progressing, ready)


def _failed(model: ModelRef, then: str) -> Cond:
    return Cond(
        "False",
        Reason.ROLLOUT_FAILED,
        f"model {model.uri} did not become ready within the Deployment's progress deadline "
        f"({DEADLINE_EXCEEDED}); {then}",
    )


def _no_rollback(last_good: ModelRef | None) -> str:
    if last_good is None:
        return "there is no earlier good model to roll back to"
    return "it is the last good model, there is nothing to roll back to"
