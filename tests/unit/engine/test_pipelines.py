"""plan_pipeline, table-driven: Ready, the schedule and its concurrency policies, history
pruning, the runs kicked, events on transitions only, and idempotence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.api.common import Condition
from conveyor.api.pipeline import PipelineSpec, PipelineStatus
from conveyor.engine.admission import RunSummary
from conveyor.engine.pipelines import PipelineFacts, PipelinePlan, plan_pipeline
from conveyor.engine.validation import Problem

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 1, 10, 1, tzinfo=UTC)
CYCLE = Problem("spec.stages", "a cycle: a -> a")


def iso(hh: int, mm: int) -> str:
    return datetime(2026, 1, 1, hh, mm, tzinfo=UTC).isoformat()


def spec(**fields: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"stages": [{"name": "a", "image": "x"}], **fields})


def run(
    name: str, phase: str = "Pending", done: str = "", pipeline: str = "p", cancelled: bool = False
) -> RunSummary:
    return RunSummary(name, pipeline, phase, cancelled, "2026-01-01T09:00:00Z", done)


def facts(
    spec: PipelineSpec | None = None,
    problems: Sequence[Problem] = (),
    runs: Sequence[RunSummary] = (),
    champion: str | None = "s3://b/new",
) -> PipelineFacts:
    return PipelineFacts("p", 2, spec, problems, runs, champion, NOW)


def status(ready: str | None = None, last: str | None = None, message: str = "") -> PipelineStatus:
    conditions = []
    if ready is not None:
        reason = "Valid" if ready == "True" else "InvalidSpec"
        message = message or ("the pipeline is valid" if ready == "True" else str(CYCLE))
        conditions = [
            Condition(
                type="Ready",
                status=ready,
                reason=reason,
                message=message,
                observed_generation=2,
                last_transition_time=T0,
            )
        ]
    return PipelineStatus(
        observed_generation=2, conditions=conditions, last_schedule_time=last, champion="s3://b/old"
    )


def outcome(plan: PipelinePlan) -> dict[str, Any]:
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    return {
        "ready": (ready.status, ready.reason, ready.observed_generation),
        "last": plan.status.last_schedule_time,
        "champion": plan.status.champion,
        "create": plan.create,
        "cancel": plan.cancel,
        "delete": plan.delete,
        "kick": plan.kick,
        "events": [(e.type, e.reason) for e in plan.events],
        "changed": plan.status_changed,
    }


VALID = {"ready": ("True", "Valid", 2), "champion": "s3://b/new", "events": [], "changed": True}
INVALID = {"ready": ("False", "InvalidSpec", 2), "champion": "s3://b/old", "events": []}
NONE: dict[str, Any] = {"create": None, "cancel": (), "delete": (), "kick": ()}
EVERY_MINUTE, FIVE = {"schedule": "* * * * *"}, {"schedule": "*/5 * * * *"}
HISTORY = [run("k0", "Succeeded", iso(10, 0)), run("k1", "Pending"), run("k2", "Running")]

# id, facts, previous status, expected outcome (every key of `outcome`)
CASES: list[tuple[str, PipelineFacts, PipelineStatus, dict[str, Any]]] = [
    (
        "invalid: Ready False, Warning, nothing scheduled, pruned or kicked",
        facts(spec(**FIVE, historyLimit=0), [CYCLE], HISTORY),
        status(last=iso(9, 55)),
        {**INVALID, **NONE, "last": iso(9, 55), "events": [("Warning", "InvalidSpec")], "changed": True},
    ),
    (
        "unparseable (no spec): Ready False",
        facts(None, [Problem("spec.stages", "field required")], HISTORY),
        status("False", message="old problem"),
        {**INVALID, **NONE, "last": None, "changed": True},
    ),
    (
        "invalid, unchanged: no event, no write",
        facts(spec(), [CYCLE], HISTORY),
        status("False"),
        {**INVALID, **NONE, "last": None, "changed": False},
    ),
    (
        "turned invalid: Warning event",
        facts(spec(), [CYCLE]),
        status("True"),
        {**INVALID, **NONE, "last": None, "events": [("Warning", "InvalidSpec")], "changed": True},
    ),
    (
        "valid, first sight: Ready True, Normal event, champion recorded",
        facts(spec()),
        status(),
        {**VALID, **NONE, "last": None, "events": [("Normal", "Valid")]},
    ),
    (
        "fixed: Normal event, waiting runs kicked",
        facts(spec(), runs=[run("w1")]),
        status("False"),
        {**VALID, **NONE, "last": None, "kick": ("w1",), "events": [("Normal", "Valid")]},
    ),
    (
        "valid, already Ready: no event; the champion can go",
        facts(spec(), champion=None),
        status("True"),
        {**VALID, **NONE, "last": None, "champion": None},
    ),
    (
        "schedule, first sight: the clock starts, nothing due",
        facts(spec(**FIVE)),
        status("True"),
        {**VALID, **NONE, "last": NOW.isoformat()},
    ),
    (
        "schedule not due yet",
        facts(spec(**FIVE), champion="s3://b/old"),
        status("True", last=iso(10, 0)),
        {**VALID, **NONE, "last": iso(10, 0), "champion": "s3://b/old", "changed": False},
    ),
    (
        "due: the run of the latest due time is created",
        facts(spec(**FIVE)),
        status("True", last=iso(9, 50)),
        {**VALID, **NONE, "last": iso(10, 0), "create": "p-202601011000"},
    ),
    (
        "Allow: created beside active runs",
        facts(spec(**EVERY_MINUTE), runs=[run("r1", "Running")]),
        status("True", last=iso(10, 0)),
        {**VALID, **NONE, "last": iso(10, 1), "create": "p-202601011001"},
    ),
    (
        "Forbid with a Running run: skipped, the due time is spent",
        facts(spec(**EVERY_MINUTE, concurrencyPolicy="Forbid"), runs=[run("r1", "Running")]),
        status("True", last=iso(10, 0)),
        {**VALID, **NONE, "last": iso(10, 1)},
    ),
    (
        "Forbid with a Pending run: skipped (kicked as waiting)",
        facts(spec(**EVERY_MINUTE, concurrencyPolicy="Forbid"), runs=[run("r1")]),
        status("True", last=iso(10, 0)),
        {**VALID, **NONE, "last": iso(10, 1), "kick": ("r1",)},
    ),
    (
        "Forbid with finished runs and other pipelines' active ones: created",
        facts(
            spec(**EVERY_MINUTE, concurrencyPolicy="Forbid"),
            runs=[run("r1", "Failed", iso(9, 0)), run("q1", "Running", pipeline="q")],
        ),
        status("True", last=iso(10, 0)),
        {**VALID, **NONE, "last": iso(10, 1), "create": "p-202601011001"},
    ),
    (
        "Replace: active runs of this pipeline cancelled, the new one created",
        facts(
            spec(**EVERY_MINUTE, concurrencyPolicy="Replace"),
            runs=[
                run("r1", "Running"),
                run("r2"),
                run("r3", "Succeeded", iso(9, 0)),
                run("r4", "Running", cancelled=True),  # being cancelled already
                run("q1", "Running", pipeline="q"),
            ],
        ),
        status("True", last=iso(10, 0)),
        {
            **VALID,
            **NONE,
            "last": iso(10, 1),
            "create": "p-202601011001",
            "cancel": ("r1", "r2"),
            "kick": ("r2",),
        },
    ),
    (
        "the due run exists already (a lost status write): not cancelled, not created again",
        facts(spec(**EVERY_MINUTE, concurrencyPolicy="Replace"), runs=[run("p-202601011001", "Running")]),
        status("True", last=iso(10, 0)),
        {**VALID, **NONE, "last": iso(10, 1)},
    ),
    (
        "history: the earliest completed go first, unfinished runs never",
        facts(
            spec(historyLimit=2),
            runs=[
                run("k0", "Succeeded", iso(10, 0)),
                run("k1", "Failed", iso(9, 0)),
                run("k2", "Cancelled", iso(9, 30)),
                run("k3", "Succeeded", iso(9, 45)),
                run("k4", "Running"),
                run("q0", "Succeeded", iso(8, 0), pipeline="q"),
            ],
        ),
        status("True"),
        {**VALID, **NONE, "last": None, "delete": ("k1", "k2")},
    ),
    (
        "history: ties on completion by name; historyLimit 0 keeps none",
        facts(spec(historyLimit=0), runs=[run("b", "Succeeded", iso(9, 0)), run("a", "Failed", iso(9, 0))]),
        status("True"),
        {**VALID, **NONE, "last": None, "delete": ("a", "b")},
    ),
    (
        "history within the limit, or no limit: nothing deleted",
        facts(spec(historyLimit=5), runs=HISTORY),
        status("True"),
        {**VALID, **NONE, "last": None, "kick": ("k1",)},
    ),
    (
        "kick: Pending runs of this pipeline only (a cancelled one too, so it records Cancelled)",
        facts(
            spec(),
            runs=[run("w1"), run("w2", cancelled=True), run("r", "Running"), run("q", pipeline="q")],
        ),
        status("True"),
        {**VALID, **NONE, "last": None, "kick": ("w1", "w2")},
    ),
]


@pytest.mark.parametrize(("world", "previous", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_pipeline(world: PipelineFacts, previous: PipelineStatus, expected: dict[str, Any]) -> None:
    assert outcome(plan_pipeline(world, previous)) == expected


def test_ready_condition_and_event_message() -> None:
    plan = plan_pipeline(facts(spec(), [CYCLE, Problem("spec.params", "bad")]), status("True"))
    ready = plan.status.conditions[0]
    assert ready.message == "spec.stages: a cycle: a -> a; spec.params: bad"
    assert ready.last_transition_time == NOW  # it flipped
    assert plan.events[0].message == ready.message
    assert plan.status.observed_generation == 2


def test_last_transition_time_stays_without_a_flip() -> None:
    plan = plan_pipeline(facts(spec(), champion="s3://b/old"), status("True"))
    assert plan.status.conditions[0].last_transition_time == T0


def after(world: PipelineFacts, plan: PipelinePlan) -> PipelineFacts:
    """The world once `plan` is applied: the run created, runs cancelled, runs deleted."""
    runs = [
        replace(r, cancelled=r.cancelled or r.name in plan.cancel)
        for r in world.runs
        if r.name not in plan.delete
    ]
    if plan.create:
        runs.append(run(plan.create))
    return replace(world, runs=runs)


IDEMPOTENT = [(c[0], c[1], c[2]) for c in CASES]


@pytest.mark.parametrize(("world", "previous"), [c[1:] for c in IDEMPOTENT], ids=[c[0] for c in IDEMPOTENT])
def test_planning_again_after_applying_plans_nothing_new(
    world: PipelineFacts, previous: PipelineStatus
) -> None:
    first = plan_pipeline(world, previous)
    again = plan_pipeline(after(world, first), first.status)
    assert (again.status_changed, again.create, again.cancel, again.delete, again.events) == (
        False,
        None,
        (),
        (),
        (),
    )
    assert again.status == first.status


def test_planning_is_pure() -> None:
    world, previous = facts(spec(**FIVE, historyLimit=0), runs=HISTORY), status("True", last=iso(9, 50))
    kept = previous.model_copy(deep=True)
    assert plan_pipeline(world, previous) == plan_pipeline(world, previous)
    assert previous == kept  # the previous status is not edited
