"""What to do about a ModelDeployment, decided from what is observed. Pure: no I/O, no clock.

`plan_model_deployment` maps (the validated spec, the observed facts, the previous status,
now, the generation) to a `DeploymentPlan`: the actions (create or patch the Deployment to serve
a model, create the Service, start a retraining PipelineRun), the whole new status and the
events to post. The reconciler (kube/reconcilers/modeldeployment.py) observes, calls it,
applies the actions, writes the status when it changed and posts the events.

The policy, in order:
- an invalid spec, or no model to serve: Ready False with the reason, nothing else;
- the rollout (engine/rollout.py): what to serve, the last good model, the failed one,
  Available, Progressing and Ready;
- drift and live quality, only while Ready is True and each is configured: a drift score over
  threshold, or a live quality metric (over at least `minSamples` labels) past its bound, for
  `for` starts a retraining run (drift first if both fire), unless within `cooldown` of the
  last one or `maxRunsPerDay` runs were created in the last 24 hours; the status and the run's
  label say which trigger fired;
- events only on transitions: Ready flipping, a retraining run started.

Three facts are costly (the drift score and the live quality read every pod or Prometheus; the
recent runs are a list call) and only sometimes needed, so they are read only when the plan asks for them: a
plan whose `needs` is set asks for that fact, is not to be applied, and the planner is called
again with it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Final

from pydantic import ValidationError

from conveyor.api.common import Condition, Reason
from conveyor.api.modeldeployment import (
    DriftMonitoring,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PerformanceMonitoring,
    Retrain,
)
from conveyor.engine.conditions import set_condition
from conveyor.engine.durations import parse_duration
from conveyor.engine.events import Event
from conveyor.engine.names import child_name
from conveyor.engine.rollout import ModelRef, Rollout, RolloutPlan, plan_rollout
from conveyor.engine.validation import pydantic_problems

RETRAIN_WINDOW = timedelta(days=1)  # maxRunsPerDay counts the runs created in this window


@dataclass(frozen=True)
class InvalidSpec:
    """The ModelDeployment does not validate: why."""

    message: str


@dataclass(frozen=True)
class NoModel:
    """There is no model to serve (no such Pipeline, no champion yet, a bad URI, credentials
    not allowed): why."""

    message: str
    reason: Reason = Reason.MODEL_NOT_FOUND


class NotRead(Enum):
    NOT_READ = "not read"


NOT_READ: Final = NotRead.NOT_READ


class Need(StrEnum):
    """A fact the planner needs before it can decide."""

    DRIFT = "drift"
    QUALITY = "live quality"
    RECENT_RETRAINS = "recent retraining runs"


@dataclass(frozen=True)
class Quality:
    """The deployment's live quality metric (NaN: no pod has a finite one) and the labelled
    predictions it is computed from."""

    value: float
    samples: float


@dataclass(frozen=True)
class DeploymentFacts:
    """What the reconciler observed."""

    target: ModelRef | NoModel  # the model wanted, or why there is none
    rollout: Rollout | None = None  # the Deployment's (engine.rollout.read_rollout); None: none yet
    service: bool = False  # the Service exists
    endpoint: str = ""  # the Service's URL
    drift: float | NotRead | None = NOT_READ  # None: no pod has a score yet; NaN: none is finite
    recent_retrains: int | None = None  # retraining runs created in the last 24 h; None: not counted
    quality: Quality | NotRead | None = NOT_READ  # None: no pod reports the metric yet


UNOBSERVED = DeploymentFacts(NoModel("not looked for"))  # an invalid spec: nothing is observed


@dataclass(frozen=True)
class Serve:
    """Put this model in the Deployment's pod template: create the Deployment, or patch it."""

    model: ModelRef
    create: bool


@dataclass(frozen=True)
class RetrainRun:
    """A retraining PipelineRun to create (of `spec.retrain`'s pipeline and params)."""

    name: str
    reason: str
    trigger: str = "drift"  # drift | performance: the run's conveyor.dev/trigger label


@dataclass(frozen=True)
class Trigger:
    """A monitor that has been past its bound for long enough: which, and why (`short`: the
    measurement alone)."""

    kind: str
    short: str
    why: str


@dataclass(frozen=True)
class DeploymentPlan:
    status: ModelDeploymentStatus  # the whole new status
    changed: bool  # it differs from the previous one: write it
    deployment: Serve | None = None
    create_service: bool = False
    ensure_monitoring: bool = False  # ServiceMonitor / PrometheusRule, where they are served
    retrain: RetrainRun | None = None
    events: tuple[Event, ...] = ()
    needs: Need | None = None  # set: observe this and plan again; apply nothing


def parse_spec(body: dict[str, Any]) -> ModelDeploymentSpec | InvalidSpec:
    try:
        return ModelDeployment.model_validate(body).spec
    except ValidationError as err:
        return InvalidSpec("; ".join(map(str, pydantic_problems(err, ""))))


def uri_target(uri: str, version: str) -> ModelRef:
    """The model a ModelDeployment names by URI (`version`: the run it came from, as the store's
    layout says). Its digest stands for the URI (a rollout follows a change of URI); the server
    checks the file's own SHA-256."""
    return ModelRef(uri, hashlib.sha256(uri.encode()).hexdigest(), version)


def last_good(status: ModelDeploymentStatus) -> ModelRef | None:
    if status.last_good_model is None or status.last_good_sha256 is None:
        return None
    return ModelRef(status.last_good_model, status.last_good_sha256, status.model_version or "")


def recent_retrains(created: Iterable[str | None], now: datetime) -> int:
    """How many of these runs (their creationTimestamps) were created in the last 24 hours."""
    since = now - RETRAIN_WINDOW
    return sum(1 for stamp in created if stamp and _timestamp(stamp) > since)


def plan_model_deployment(
    name: str,
    spec: ModelDeploymentSpec | InvalidSpec,
    facts: DeploymentFacts,
    previous: ModelDeploymentStatus,
    now: datetime,
    generation: int | None,
) -> DeploymentPlan:
    status = previous.model_copy(update={"observed_generation": generation}, deep=True)
    if isinstance(spec, InvalidSpec):
        return _plan(previous, _set(status, "Ready", "False", Reason.INVALID_SPEC, spec.message, now))
    if isinstance(facts.target, NoModel):
        message, reason = facts.target.message, facts.target.reason
        return _plan(previous, _set(status, "Ready", "False", reason, message, now))
    rollout = plan_rollout(
        facts.target, facts.rollout, spec.replicas, last_good(previous), previous.failed_model_sha256
    )
    status = _rollout_status(status, rollout, facts, spec.replicas, now)
    drift = spec.monitoring.drift if spec.monitoring else None
    performance = spec.monitoring.performance if spec.monitoring else None
    retrain: RetrainRun | None = None
    if _ready(status) == "True" and (drift is not None or performance is not None):
        if drift is not None and isinstance(facts.drift, NotRead):
            return DeploymentPlan(status, False, needs=Need.DRIFT)
        if performance is not None and isinstance(facts.quality, NotRead):
            return DeploymentPlan(status, False, needs=Need.QUALITY)
        fired: Trigger | None = None
        if drift is not None:
            status, fired = _drift(drift, facts, status, now)
        if performance is not None:
            status, degraded = _performance(performance, facts, status, now)
            fired = fired or degraded
        if fired is not None:
            status, retrain, needs = _retrain(name, fired, spec.retrain, facts, status, now)
            if needs is not None:
                return DeploymentPlan(status, False, needs=needs)
    return _plan(
        previous,
        status,
        deployment=Serve(rollout.serve, facts.rollout is None) if rollout.update else None,
        create_service=not facts.service,
        ensure_monitoring=True,
        retrain=retrain,
    )


def _rollout_status(
    status: ModelDeploymentStatus, plan: RolloutPlan, facts: DeploymentFacts, replicas: int, now: datetime
) -> ModelDeploymentStatus:
    """The status from the rollout plan: a model is recorded as serving (and last good) only
    once its own rollout is complete."""
    ready = facts.rollout.ready if facts.rollout is not None else 0
    available = facts.rollout is not None and facts.rollout.available
    update: dict[str, Any] = {
        "ready_replicas": ready,
        "endpoint": facts.endpoint,
        "failed_model_sha256": plan.failed_sha256,
    }
    if plan.good is not None:
        update |= {"model_uri": plan.good.uri, "model_version": plan.good.version}
        update |= {"last_good_model": plan.good.uri, "last_good_sha256": plan.good.sha256}
    status = status.model_copy(update=update)
    reason = Reason.AVAILABLE if available else Reason.PENDING
    message = f"{ready}/{replicas} replicas ready"
    status = _set(status, "Available", "True" if available else "False", reason, message, now)
    for type_, cond in (("Progressing", plan.progressing), ("Ready", plan.ready)):
        status = _set(status, type_, cond.status, cond.reason, cond.message, now)
    return status


def _drift(
    drift: DriftMonitoring, facts: DeploymentFacts, status: ModelDeploymentStatus, now: datetime
) -> tuple[ModelDeploymentStatus, Trigger | None]:
    """The drift score recorded; a trigger when it has been over threshold for `for`."""
    score = facts.drift
    if score is None or isinstance(score, NotRead):
        return status, None  # no pod has a score yet: nothing changes
    if not math.isfinite(score):
        return _with(status, last_drift_score=None), None  # no measurement: null, not acted on
    status = _with(status, last_drift_score=round(score, 4))
    since, held = _sustained(status.drift_since, score > drift.threshold, drift.for_, now)
    status = _with(status, drift_since=since)
    if not held:
        return status, None
    short = f"drift {score:.3f} > {drift.threshold}"
    return status, Trigger("drift", short, f"{short} ({drift.method}) for {drift.for_}")


def _sustained(
    since: datetime | None, breached: bool, for_: str, now: datetime
) -> tuple[datetime | None, bool]:
    """When the current breach began (None: there is none) and whether it has lasted `for_`:
    the one rule drift and live quality share."""
    if not breached:
        return None, False
    since = since or now
    return since, now - since >= parse_duration(for_)


def _performance(
    perf: PerformanceMonitoring, facts: DeploymentFacts, status: ModelDeploymentStatus, now: datetime
) -> tuple[ModelDeploymentStatus, Trigger | None]:
    """The live metric recorded; a trigger when, over at least `minSamples` labels, it has
    been under `min` (or over `max`) for `for`."""
    quality = facts.quality
    if quality is None or isinstance(quality, NotRead):
        return status, None  # no pod reports it yet: nothing changes
    samples = int(quality.samples) if math.isfinite(quality.samples) else 0
    if not math.isfinite(quality.value):
        return _with(status, last_performance=None, labelled_samples=samples), None
    status = _with(status, last_performance=round(quality.value, 4), labelled_samples=samples)
    bound = perf.threshold
    past = quality.value < bound if perf.higher_is_better else quality.value > bound
    breached = past and samples >= perf.min_samples
    since, held = _sustained(status.performance_since, breached, perf.for_, now)
    status = _with(status, performance_since=since)
    if not held:
        return status, None
    short = f"{perf.metric} {quality.value:.3f} {'<' if perf.higher_is_better else '>'} {bound:g}"
    return status, Trigger("performance", short, f"{short} over {samples} labels for {perf.for_}")


def _retrain(
    name: str,
    fired: Trigger,
    retrain: Retrain | None,
    facts: DeploymentFacts,
    status: ModelDeploymentStatus,
    now: datetime,
) -> tuple[ModelDeploymentStatus, RetrainRun | None, Need | None]:
    """A fired trigger starts a retraining run, within the cooldown and the daily cap: (the
    status, the run to start, the fact still needed)."""
    if retrain is None:
        return status, None, None
    last = status.last_retrain_time
    if last is not None and now - last < parse_duration(retrain.cooldown):
        return status, None, None
    if facts.recent_retrains is None:
        return status, None, Need.RECENT_RETRAINS
    if facts.recent_retrains >= retrain.max_runs_per_day:
        capped = (
            f"{fired.short}, but {facts.recent_retrains} retraining "
            f"runs in the last 24h reached maxRunsPerDay"
        )
        return _with(status, last_retrain_reason=capped), None, None
    run = child_name(name, "retrain-" + now.strftime("%Y%m%d%H%M%S"))
    status = _with(
        status,
        last_retrain_run=run,
        last_retrain_time=now,
        last_retrain_reason=fired.why,
        last_retrain_trigger=fired.kind,
        drift_since=None,
        performance_since=None,
    )
    return status, RetrainRun(run, fired.why, fired.kind), None


def _plan(
    previous: ModelDeploymentStatus,
    status: ModelDeploymentStatus,
    deployment: Serve | None = None,
    create_service: bool = False,
    ensure_monitoring: bool = False,
    retrain: RetrainRun | None = None,
) -> DeploymentPlan:
    """The plan, with its events: a retraining run started, Ready flipping."""
    events: list[Event] = []
    if retrain is not None:
        reason = Reason.DRIFT_DETECTED if retrain.trigger == "drift" else Reason.PERFORMANCE_DEGRADED
        events.append(Event("Normal", reason, f"{retrain.reason}: started {retrain.name}"))
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    if ready is not None and ready.status != _ready(previous):
        events.append(Event("Normal" if ready.status == "True" else "Warning", ready.reason, ready.message))
    return DeploymentPlan(
        status,
        status.model_dump() != previous.model_dump(),
        deployment=deployment,
        create_service=create_service,
        ensure_monitoring=ensure_monitoring,
        retrain=retrain,
        events=tuple(events),
    )


def _ready(status: ModelDeploymentStatus) -> str | None:
    return next((c.status for c in status.conditions if c.type == "Ready"), None)


def _set(
    status: ModelDeploymentStatus,
    type_: str,
    value: str,
    reason: str,
    message: str,
    now: datetime,
) -> ModelDeploymentStatus:
    generation = status.observed_generation
    cond = Condition(type=type_, status=value, reason=reason, message=message, observed_generation=generation)
    return _with(status, conditions=set_condition(status.conditions, cond, now))


def _with(status: ModelDeploymentStatus, **update: Any) -> ModelDeploymentStatus:
    return status.model_copy(update=update)


def _timestamp(stamp: str) -> datetime:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
