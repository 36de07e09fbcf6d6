"""The ModelDeployment planner's live-quality trigger (`spec.monitoring.performance`), branch by
branch (table-driven, no I/O): reading the metric, `minSamples`, `min` / `max`, `for`, the
shared cooldown and daily cap, which trigger fires when both do, what the status and the run
say; and the spec's own rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.api.modeldeployment import ModelDeploymentSpec, PerformanceMonitoring
from conveyor.engine.modeldeployments import (
    DeploymentFacts,
    Need,
    Quality,
    RetrainRun,
    plan_model_deployment,
)
from tests.unit.engine.test_modeldeployments import (
    NOW,
    RETRAIN,
    RUN,
    facts,
    serving_a,
    spec,
)

ACCURACY = {"metric": "accuracy", "min": 0.8, "minSamples": 50, "for": "5m"}
RMSE = {"metric": "rmse", "max": 2.5, "minSamples": 50, "for": "0s"}
WATCHED = spec(monitoring={"performance": ACCURACY}, retrain=RETRAIN)
BOTH = spec(
    monitoring={"performance": {**ACCURACY, "for": "0s"}, "drift": {"threshold": 0.25, "for": "0s"}},
    retrain=RETRAIN,
)
WHY = "accuracy 0.612 < 0.8 over 120 labels for 5m"
LOW = Quality(0.6123, 120)
SINCE = NOW - timedelta(minutes=6)


@dataclass(frozen=True)
class Case:
    id: str
    facts: DeploymentFacts
    spec: ModelDeploymentSpec = field(default_factory=lambda: WATCHED)
    previous: dict[str, Any] = field(default_factory=dict)  # status fields before
    retrain: RetrainRun | None = None
    needs: Need | None = None
    events: tuple[str, ...] = ()  # reasons
    fields: dict[str, Any] = field(default_factory=dict)  # status fields after


CASES = [
    Case("monitored, not read yet: read it", facts(), needs=Need.QUALITY),
    Case("both monitored: drift is read first", facts(), spec=BOTH, needs=Need.DRIFT),
    Case("both monitored, drift read: the quality next", facts(drift=0.1), spec=BOTH, needs=Need.QUALITY),
    Case(
        "not monitored: not read, nothing recorded",
        facts(),
        spec=spec(retrain=RETRAIN),
        fields={"last_performance": None, "labelled_samples": None},
    ),
    Case(
        "no pod reports it yet: the status is left as it was",
        facts(quality=None),
        previous={"last_performance": 0.9, "labelled_samples": 80},
        fields={"last_performance": 0.9, "labelled_samples": 80, "performance_since": None},
    ),
    Case(
        "no finite value: recorded as null, not acted on",
        facts(quality=Quality(math.nan, 0)),
        previous={"last_performance": 0.7, "performance_since": SINCE},
        fields={"last_performance": None, "labelled_samples": 0, "last_retrain_run": None},
    ),
    Case(
        "under min but under minSamples: recorded, not counted",
        facts(quality=Quality(0.5, 49)),
        previous={"performance_since": SINCE},
        fields={"last_performance": 0.5, "labelled_samples": 49, "performance_since": None},
    ),
    Case(
        "above min: recorded, performance_since cleared",
        facts(quality=Quality(0.91234, 200)),
        previous={"performance_since": SINCE},
        fields={"last_performance": 0.9123, "labelled_samples": 200, "performance_since": None},
    ),
    Case(
        "at min exactly: not under it",
        facts(quality=Quality(0.8, 200)),
        fields={"performance_since": None, "last_retrain_run": None},
    ),
    Case(
        "under min the first time: performance_since is now",
        facts(quality=LOW),
        fields={"last_performance": 0.6123, "performance_since": NOW, "last_retrain_run": None},
    ),
    Case(
        "under, not yet for long enough",
        facts(quality=LOW),
        previous={"performance_since": NOW - timedelta(minutes=4, seconds=59)},
        fields={"performance_since": NOW - timedelta(minutes=4, seconds=59), "last_retrain_run": None},
    ),
    Case(
        "under for long enough: count the recent runs first",
        facts(quality=LOW),
        previous={"performance_since": SINCE},
        needs=Need.RECENT_RETRAINS,
    ),
    Case(
        "under for long enough: a run, its trigger performance, the clock reset",
        facts(quality=LOW, recent_retrains=1),
        previous={"performance_since": SINCE, "last_retrain_time": NOW - timedelta(hours=1)},
        retrain=RetrainRun(RUN, WHY, "performance"),
        events=("PerformanceDegraded",),
        fields={
            "last_retrain_run": RUN,
            "last_retrain_time": NOW,
            "last_retrain_reason": WHY,
            "last_retrain_trigger": "performance",
            "performance_since": None,
        },
    ),
    Case(
        "within the cooldown of a drift run: nothing",
        facts(quality=LOW, recent_retrains=1),
        previous={"performance_since": SINCE, "last_retrain_time": NOW - timedelta(minutes=59)},
        fields={"performance_since": SINCE, "last_retrain_run": None},
    ),
    Case(
        "the daily cap reached: the reason says so, no run",
        facts(quality=LOW, recent_retrains=2),
        previous={"performance_since": SINCE},
        fields={
            "last_retrain_reason": "accuracy 0.612 < 0.8, but 2 retraining runs in the last 24h "
            "reached maxRunsPerDay",
            "last_retrain_run": None,
        },
    ),
    Case(
        "no retrain spec: recorded, nothing started",
        facts(quality=LOW),
        spec=spec(monitoring={"performance": ACCURACY}),
        previous={"performance_since": SINCE},
        fields={"last_performance": 0.6123, "performance_since": SINCE, "last_retrain_run": None},
    ),
    Case(
        "a regressor's rmse over max: a run",
        facts(quality=Quality(3.14159, 60), recent_retrains=0),
        spec=spec(monitoring={"performance": RMSE}, retrain=RETRAIN),
        retrain=RetrainRun(RUN, "rmse 3.142 > 2.5 over 60 labels for 0s", "performance"),
        events=("PerformanceDegraded",),
        fields={"last_retrain_trigger": "performance", "last_performance": 3.1416},
    ),
    Case(
        "a regressor's rmse under max: nothing",
        facts(quality=Quality(1.0, 60)),
        spec=spec(monitoring={"performance": RMSE}, retrain=RETRAIN),
        fields={"last_performance": 1.0, "performance_since": None, "last_retrain_run": None},
    ),
    Case(
        "both fire at once: one run, drift's, and both clocks reset",
        facts(drift=0.4, quality=LOW, recent_retrains=0),
        spec=BOTH,
        retrain=RetrainRun(RUN, "drift 0.400 > 0.25 (psi) for 0s", "drift"),
        events=("DriftDetected",),
        fields={"last_retrain_trigger": "drift", "performance_since": None, "drift_since": None},
    ),
    Case(
        "drift under, quality under: the quality's run",
        facts(drift=0.1, quality=LOW, recent_retrains=0),
        spec=BOTH,
        retrain=RetrainRun(RUN, "accuracy 0.612 < 0.8 over 120 labels for 0s", "performance"),
        events=("PerformanceDegraded",),
        fields={"last_retrain_trigger": "performance", "last_drift_score": 0.1},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    previous = serving_a(**case.previous)
    got = plan_model_deployment("m", case.spec, case.facts, previous, NOW, 1)
    assert (got.retrain, got.needs) == (case.retrain, case.needs)
    if case.needs is not None:
        return
    assert tuple(e.reason for e in got.events) == case.events
    assert {k: getattr(got.status, k) for k in case.fields} == case.fields
    assert got.deployment is None and not got.create_service


SPEC_ERRORS = [
    ("accuracy-with-max", {"metric": "accuracy", "max": 0.8}, "accuracy takes `min`"),
    ("accuracy-with-both", {"metric": "accuracy", "min": 0.8, "max": 0.9}, "not `max`"),
    ("f1-with-neither", {"metric": "f1"}, "f1 takes `min`"),
    ("rmse-with-min", {"metric": "rmse", "min": 1.0}, "rmse takes `max`"),
    ("accuracy-over-one", {"metric": "accuracy", "min": 80}, "between 0 and 1, not 80"),
    ("min-samples-over-window", {"metric": "mae", "max": 1, "window": 50, "minSamples": 51}, "at most"),
    ("unknown-metric", {"metric": "auc", "min": 0.8}, "metric\n  Input should be 'accuracy', 'f1'"),
    ("bad-for", {"metric": "accuracy", "min": 0.8, "for": "5 minutes"}, "for\n  String should match pattern"),
    ("tiny-window", {"metric": "accuracy", "min": 0.8, "window": 5}, "window\n  Input should be greater"),
]


@pytest.mark.parametrize(("body", "says"), [e[1:] for e in SPEC_ERRORS], ids=[e[0] for e in SPEC_ERRORS])
def test_a_bad_performance_spec_says_what_is_wrong(body: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        PerformanceMonitoring.model_validate(body)


def test_the_bound_is_min_or_max_by_metric() -> None:
    accuracy = PerformanceMonitoring.model_validate(ACCURACY)
    rmse = PerformanceMonitoring.model_validate(RMSE)
    assert (accuracy.threshold, accuracy.higher_is_better) == (0.8, True)
    assert (rmse.threshold, rmse.higher_is_better) == (2.5, False)
    assert accuracy.model_dump(by_alias=True, exclude_none=True) == {
        "metric": "accuracy",
        "min": 0.8,
        "window": 1000,
        "minSamples": 50,
        "for": "5m",
    }
