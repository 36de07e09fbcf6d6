"""The ModelDeployment planner, branch by branch (table-driven): invalid spec, no model, the
rollout and rollback, drift, the retraining trigger with its cooldown and daily cap, events only
on transitions, and planning again on the plan's own status changing nothing."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.api.common import Condition
from conveyor.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from conveyor.engine.durations import DurationError, parse_duration
from conveyor.engine.modeldeployments import (
    DeploymentFacts,
    DeploymentPlan,
    InvalidSpec,
    Need,
    NoModel,
    RetrainRun,
    Serve,
    parse_spec,
    plan_model_deployment,
    recent_retrains,
    uri_target,
)
from conveyor.engine.rollout import ModelRef, Rollout
from conveyor.errors import UserError

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
A = uri_target("s3://bkt/ml/p/r1/train/model.skops", "r1")
B = uri_target("s3://bkt/ml/p/r2/train/model.skops", "r2")
ENDPOINT = "http://m.ml.svc:8000"
DRIFT = {"drift": {"threshold": 0.25, "for": "5m"}}
RETRAIN = {"pipelineRef": "p", "cooldown": "1h", "maxRunsPerDay": 2}
RUN = "m-retrain-20260101120000"
WHY = "drift 0.400 > 0.25 (psi) for 5m"


def spec(replicas: int = 1, **extra: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": {"uri": A.uri}, "replicas": replicas, **extra})


WATCHED = spec(monitoring=DRIFT, retrain=RETRAIN)


def complete(model: ModelRef, replicas: int = 1) -> Rollout:
    return Rollout(model.sha256, replicas, replicas, True, True, False, "complete")


def rolling(model: ModelRef) -> Rollout:
    """maxSurge 1: the new pod is not ready yet, the old one is and serves."""
    return Rollout(model.sha256, 1, 1, True, False, False, "1 old replicas pending termination")


def deadline(model: ModelRef, available: bool = True) -> Rollout:
    return Rollout(model.sha256, 1, int(available), available, False, True, "progress deadline exceeded")


def cond(type_: str, status: str, reason: str) -> Condition:
    return Condition(type=type_, status=status, reason=reason, message="", observed_generation=1)


def status(**fields: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus(observed_generation=1, **fields)


SERVING_A = status(
    conditions=[
        cond("Available", "True", "Available"),
        cond("Progressing", "False", "Succeeded"),
        cond("Ready", "True", "Available"),
    ],
    model_uri=A.uri,
    model_version="r1",
    endpoint=ENDPOINT,
    ready_replicas=1,
    last_good_model=A.uri,
    last_good_sha256=A.sha256,
)
NOTHING = ModelDeploymentStatus()


def serving_a(**fields: Any) -> ModelDeploymentStatus:
    return SERVING_A.model_copy(update=fields)


def facts(target: ModelRef | NoModel = A, **fields: Any) -> DeploymentFacts:
    return DeploymentFacts(
        target, **{"rollout": complete(A), "service": True, "endpoint": ENDPOINT, **fields}
    )


SERVING = {
    "Available": ("True", "Available"),
    "Progressing": ("False", "Succeeded"),
    "Ready": ("True", "Available"),
}


@dataclass(frozen=True)
class Case:
    id: str
    facts: DeploymentFacts
    previous: ModelDeploymentStatus = field(default_factory=lambda: SERVING_A)
    spec: ModelDeploymentSpec | InvalidSpec = field(default_factory=spec)
    # what the plan must say; actions and events are always compared (none unless named)
    deployment: Serve | None = None
    service: bool = False
    monitoring: bool = True
    retrain: RetrainRun | None = None
    needs: Need | None = None
    events: tuple[tuple[str, str], ...] = ()
    conditions: dict[str, tuple[str, str]] = field(
        default_factory=lambda: SERVING
    )  # type -> (status, reason)
    messages: dict[str, str] = field(default_factory=dict)  # type -> a part of its message
    fields: dict[str, Any] = field(default_factory=dict)  # status field -> value


GOOD_A = {
    "model_uri": A.uri,
    "last_good_model": A.uri,
    "last_good_sha256": A.sha256,
    "failed_model_sha256": None,
}

ROLLOUT_CASES = [
    Case(
        "invalid spec: Ready False, nothing else written or done",
        facts(),
        spec=InvalidSpec("spec.replicas: must be at most 100"),
        monitoring=False,
        events=(("Warning", "InvalidSpec"),),
        conditions={**SERVING, "Ready": ("False", "InvalidSpec")},
        messages={"Ready": "spec.replicas: must be at most 100"},
        fields={**GOOD_A, "observed_generation": 2},
    ),
    Case(
        "model not found: Ready False with the problem, nothing else",
        facts(NoModel("spec.model.fromPipeline: no Pipeline 'p'")),
        monitoring=False,
        events=(("Warning", "ModelNotFound"),),
        conditions={**SERVING, "Ready": ("False", "ModelNotFound")},
        messages={"Ready": "no Pipeline 'p'"},
        fields=GOOD_A,
    ),
    Case(
        "model not found on the first visit",
        facts(NoModel("no promoted model yet")),
        previous=NOTHING,
        monitoring=False,
        events=(("Warning", "ModelNotFound"),),
        conditions={"Ready": ("False", "ModelNotFound")},
        fields={"last_good_model": None, "endpoint": None},
    ),
    Case(
        "first rollout: create the Deployment and the Service",
        facts(rollout=None, service=False),
        previous=NOTHING,
        deployment=Serve(A, create=True),
        service=True,
        events=(("Warning", "RollingOut"),),
        conditions={
            "Available": ("False", "Pending"),
            "Progressing": ("True", "RollingOut"),
            "Ready": ("False", "RollingOut"),
        },
        messages={"Available": "0/1 replicas ready", "Progressing": f"rolling out model {A.uri}"},
        fields={"endpoint": ENDPOINT, "ready_replicas": 0, "last_good_model": None, "model_uri": None},
    ),
    Case(
        "a new model: patch the Deployment; the last good one serves meanwhile",
        facts(B),
        deployment=Serve(B, create=False),
        conditions={**SERVING, "Progressing": ("True", "RollingOut"), "Ready": ("True", "RollingOut")},
        fields=GOOD_A,
    ),
    Case(
        "rollout progressing, an old pod still ready: not complete, the old model is recorded",
        facts(B, rollout=rolling(B)),
        conditions={**SERVING, "Progressing": ("True", "RollingOut"), "Ready": ("True", "RollingOut")},
        messages={"Progressing": "1 old replicas pending termination"},
        fields={**GOOD_A, "model_version": "r1"},
    ),
    Case(
        "rollout complete: the model is recorded as serving and last good",
        facts(B, rollout=complete(B)),
        messages={"Ready": f"serving model {B.uri} on 1 replica(s)", "Available": "1/1 replicas ready"},
        fields={
            "model_uri": B.uri,
            "model_version": "r2",
            "last_good_model": B.uri,
            "last_good_sha256": B.sha256,
        },
    ),
    Case(
        "first rollout complete: Ready flips True",
        facts(rollout=complete(A)),
        previous=status(conditions=[cond("Ready", "False", "RollingOut")], endpoint=ENDPOINT),
        events=(("Normal", "Available"),),
        fields={**GOOD_A, "ready_replicas": 1},
    ),
    Case(
        "rollout failed with a last good model: roll back to it, and say why",
        facts(B, rollout=deadline(B)),
        deployment=Serve(A, create=False),
        conditions={**SERVING, "Progressing": ("False", "RolloutFailed"), "Ready": ("True", "RolloutFailed")},
        messages={"Progressing": f"model {B.uri} did not become ready"},
        fields={**GOOD_A, "failed_model_sha256": B.sha256},
    ),
    Case(
        "the rollback under way: the Deployment is not patched again (a stale deadline is no failure)",
        facts(B, rollout=Rollout(A.sha256, 1, 1, True, False, False, "waiting for generation 3")),
        previous=serving_a(failed_model_sha256=B.sha256),
        conditions={**SERVING, "Progressing": ("False", "RolloutFailed"), "Ready": ("True", "RolloutFailed")},
        messages={"Progressing": f"rolling back to the last good model {A.uri}"},
        fields={**GOOD_A, "failed_model_sha256": B.sha256},
    ),
    Case(
        "the rollback complete: Ready, and Progressing still says the new model failed",
        facts(B, rollout=complete(A)),
        previous=serving_a(failed_model_sha256=B.sha256),
        conditions={**SERVING, "Progressing": ("False", "RolloutFailed")},
        messages={"Progressing": f"serving the last good model {A.uri}"},
        fields={**GOOD_A, "failed_model_sha256": B.sha256},
    ),
    Case(
        "rollout failed without a last good model: nothing to roll back to",
        facts(rollout=deadline(A, available=False)),
        previous=status(conditions=[cond("Ready", "False", "RollingOut")]),
        conditions={"Progressing": ("False", "RolloutFailed"), "Ready": ("False", "RolloutFailed")},
        messages={"Progressing": "there is no earlier good model to roll back to"},
        fields={"failed_model_sha256": A.sha256, "last_good_model": None},
    ),
    Case(
        "the failed model became ready after all: recorded as good, no longer failed",
        facts(rollout=complete(A)),
        previous=status(conditions=[cond("Ready", "False", "RolloutFailed")], failed_model_sha256=A.sha256),
        events=(("Normal", "Available"),),
        fields=GOOD_A,
    ),
    Case(
        "replicas change: patch the Deployment",
        facts(),
        spec=spec(replicas=3),
        deployment=Serve(A, create=False),
        conditions={**SERVING, "Progressing": ("True", "RollingOut"), "Ready": ("True", "RollingOut")},
        messages={"Available": "1/3 replicas ready"},
        fields=GOOD_A,
    ),
    Case(
        "steady state: nothing to do, no events",
        facts(),
        fields={**GOOD_A, "observed_generation": 2},
    ),
    Case("the Service is gone: created again", facts(service=False), service=True),
]


def watched(**fields: Any) -> ModelDeploymentStatus:
    return serving_a(**fields)


DRIFT_CASES = [
    Case("drift monitored, not read yet: read it", facts(), spec=WATCHED, needs=Need.DRIFT),
    Case("drift not monitored: not read", facts(), spec=spec(retrain=RETRAIN), conditions=SERVING),
    Case(
        "drift monitored but not Ready: not read",
        facts(rollout=deadline(A, available=False)),
        spec=WATCHED,
        previous=status(conditions=[cond("Ready", "False", "RolloutFailed")]),
        conditions={"Ready": ("False", "RolloutFailed")},
        fields={"last_drift_score": None},
    ),
    Case(
        "no pod has a score yet: nothing changes",
        facts(drift=None),
        spec=WATCHED,
        previous=watched(last_drift_score=0.1, drift_since=NOW - timedelta(minutes=1)),
        fields={"last_drift_score": 0.1, "drift_since": NOW - timedelta(minutes=1)},
    ),
    Case(
        "NaN is no measurement: the score is cleared, not acted on",
        facts(drift=math.nan),
        spec=WATCHED,
        previous=watched(last_drift_score=0.4, drift_since=NOW - timedelta(hours=1)),
        fields={"last_drift_score": None, "drift_since": NOW - timedelta(hours=1), "last_retrain_run": None},
    ),
    Case(
        "infinity is no measurement either",
        facts(drift=math.inf),
        spec=WATCHED,
        previous=watched(last_drift_score=0.4),
        fields={"last_drift_score": None},
    ),
    Case(
        "under threshold: recorded, drift_since cleared",
        facts(drift=0.123456),
        spec=WATCHED,
        previous=watched(drift_since=NOW - timedelta(hours=1)),
        fields={"last_drift_score": 0.1235, "drift_since": None},
    ),
    Case(
        "at the threshold is not over it",
        facts(drift=0.25),
        spec=WATCHED,
        previous=watched(drift_since=NOW - timedelta(hours=1)),
        fields={"drift_since": None},
    ),
    Case(
        "over threshold for the first time: drift_since is now",
        facts(drift=0.4),
        spec=WATCHED,
        fields={"last_drift_score": 0.4, "drift_since": NOW, "last_retrain_run": None},
    ),
    Case(
        "over, but not for long enough yet",
        facts(drift=0.4),
        spec=WATCHED,
        previous=watched(drift_since=NOW - timedelta(minutes=4, seconds=59)),
        fields={"drift_since": NOW - timedelta(minutes=4, seconds=59)},
    ),
    Case(
        "over for long enough: count the recent retraining runs first",
        facts(drift=0.4),
        spec=WATCHED,
        previous=watched(drift_since=NOW - timedelta(minutes=5)),
        needs=Need.RECENT_RETRAINS,
    ),
    Case(
        "over for long enough: a retraining run, recorded, drift counts again",
        facts(drift=0.4, recent_retrains=1),
        spec=WATCHED,
        previous=watched(drift_since=NOW - timedelta(minutes=6), last_retrain_time=NOW - timedelta(hours=1)),
        retrain=RetrainRun(RUN, WHY),
        events=(("Normal", "DriftDetected"),),
        fields={
            "last_retrain_run": RUN,
            "last_retrain_time": NOW,
            "last_retrain_reason": WHY,
            "drift_since": None,
        },
    ),
    Case(
        "within the cooldown: no run, no count",
        facts(drift=0.4),
        spec=WATCHED,
        previous=watched(
            drift_since=NOW - timedelta(minutes=6), last_retrain_time=NOW - timedelta(minutes=59)
        ),
        fields={"drift_since": NOW - timedelta(minutes=6), "last_retrain_run": None},
    ),
    Case(
        "the daily cap reached: the reason is recorded, no run",
        facts(drift=0.4, recent_retrains=2),
        spec=WATCHED,
        previous=watched(drift_since=NOW - timedelta(minutes=6)),
        fields={
            "last_retrain_reason": "drift 0.400 > 0.25, but 2 retraining runs in the last 24h "
            "reached maxRunsPerDay",
            "last_retrain_run": None,
            "drift_since": NOW - timedelta(minutes=6),
        },
    ),
    Case(
        "no retrain spec: drift is recorded, nothing is started",
        facts(drift=0.4),
        spec=spec(monitoring=DRIFT),
        previous=watched(drift_since=NOW - timedelta(hours=2)),
        fields={"last_drift_score": 0.4, "drift_since": NOW - timedelta(hours=2), "last_retrain_run": None},
    ),
    Case(
        "Ready flips and drift starts a run in one go: both events, the run's first",
        facts(drift=0.4, recent_retrains=0),
        spec=spec(monitoring={"drift": {"threshold": 0.25, "for": "0s"}}, retrain=RETRAIN),
        previous=status(conditions=[cond("Ready", "False", "RollingOut")]),
        retrain=RetrainRun(RUN, "drift 0.400 > 0.25 (psi) for 0s"),
        events=(("Normal", "DriftDetected"), ("Normal", "Available")),
        fields={"last_retrain_run": RUN},
    ),
]

CASES = ROLLOUT_CASES + DRIFT_CASES


def plan(case: Case, previous: ModelDeploymentStatus | None = None, name: str = "m") -> DeploymentPlan:
    before = case.previous if previous is None else previous
    return plan_model_deployment(name, case.spec, case.facts, before, NOW, 2)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    got = plan(case)
    actions = (got.deployment, got.create_service, got.retrain, got.needs)
    assert actions == (case.deployment, case.service, case.retrain, case.needs)
    if case.needs is not None:
        return  # not to be applied: nothing else is read from it
    assert got.ensure_monitoring is case.monitoring
    assert [(e.type, e.reason) for e in got.events] == list(case.events)
    conds = {c.type: c for c in got.status.conditions}
    assert {t: (conds[t].status, conds[t].reason) for t in case.conditions} == case.conditions
    for type_, part in case.messages.items():
        assert part in conds[type_].message
    assert {k: getattr(got.status, k) for k in case.fields} == case.fields
    assert got.status.observed_generation == 2
    assert conds["Ready"].observed_generation == 2


IDEMPOTENT = [c for c in CASES if c.needs is None and c.retrain is None]


@pytest.mark.parametrize("case", IDEMPOTENT, ids=[c.id for c in IDEMPOTENT])
def test_planning_again_on_the_plans_own_status_changes_nothing(case: Case) -> None:
    first = plan(case)
    again = plan(case, previous=first.status)
    assert again.status == first.status
    assert (again.changed, again.events) == (False, ())
    assert (again.deployment, again.create_service, again.retrain) == (
        first.deployment,
        first.create_service,
        first.retrain,
    )


def test_the_status_is_written_only_when_it_changed() -> None:
    steady = ROLLOUT_CASES[[c.id for c in ROLLOUT_CASES].index("steady state: nothing to do, no events")]
    settled = plan(steady).status
    assert not plan(steady, previous=settled).changed
    newer = plan_model_deployment("m", steady.spec, steady.facts, settled, NOW, 3)
    assert newer.changed and newer.events == ()
    assert {c.observed_generation for c in newer.status.conditions} == {3}


def test_a_transition_moves_lastTransitionTime_and_nothing_else_does() -> None:
    earlier = NOW - timedelta(hours=1)
    previous = SERVING_A.model_copy(
        update={
            "conditions": [
                c.model_copy(update={"last_transition_time": earlier}) for c in SERVING_A.conditions
            ]
        }
    )
    got = plan_model_deployment("m", spec(), facts(NoModel("gone")), previous, NOW, 2)
    when = {c.type: c.last_transition_time for c in got.status.conditions}
    assert when == {"Available": earlier, "Progressing": earlier, "Ready": NOW}


def test_a_long_name_gives_a_valid_retraining_run_name() -> None:
    case = DRIFT_CASES[
        [c.id for c in DRIFT_CASES].index(
            "over for long enough: a retraining run, recorded, drift counts again"
        )
    ]
    got = plan(case, name="1" + "m" * 80)
    assert got.retrain is not None and len(got.retrain.name) <= 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", got.retrain.name)


def test_an_invalid_spec_is_a_plan_outcome() -> None:
    invalid = parse_spec(
        {"apiVersion": "conveyor.dev/v1alpha1", "kind": "ModelDeployment", "spec": {"model": {}}}
    )
    assert isinstance(invalid, InvalidSpec) and "uri" in invalid.message
    valid = parse_spec({"kind": "ModelDeployment", "spec": {"model": {"uri": A.uri}, "replicas": 2}})
    assert isinstance(valid, ModelDeploymentSpec) and valid.replicas == 2


def test_a_uri_target_is_named_by_the_digest_of_its_uri() -> None:
    assert (A.version, B.version) == ("r1", "r2") and A.sha256 != B.sha256 and len(A.sha256) == 64


RECENT_CASES = [
    ("none", [], 0),
    ("within 24 hours", ["2026-01-01T11:00:00Z", "2025-12-31T12:00:01Z"], 2),
    ("exactly 24 hours ago is out", ["2025-12-31T12:00:00Z"], 0),
    ("older, and no timestamp", ["2025-12-30T12:00:00Z", None], 0),
    ("an offset is understood", ["2026-01-01T13:00:00+02:00"], 1),
]


@pytest.mark.parametrize(("stamps", "count"), [c[1:] for c in RECENT_CASES], ids=[c[0] for c in RECENT_CASES])
def test_recent_retrains(stamps: list[str | None], count: int) -> None:
    assert recent_retrains(stamps, NOW) == count


DURATION_CASES = [
    ("seconds", "30s", timedelta(seconds=30)),
    ("minutes", "5m", timedelta(minutes=5)),
    ("hours", "1h", timedelta(hours=1)),
    ("zero", "0s", timedelta(0)),
]


@pytest.mark.parametrize(
    ("text", "value"), [c[1:] for c in DURATION_CASES], ids=[c[0] for c in DURATION_CASES]
)
def test_parse_duration(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["", "5", "m", "1.5h", "5 m", "1d", "-5m", "5mm"])
def test_a_bad_duration_says_what_a_duration_is(text: str) -> None:
    with pytest.raises(DurationError, match="whole number and a unit, s, m or h") as err:
        parse_duration(text)
    assert isinstance(err.value, UserError)
