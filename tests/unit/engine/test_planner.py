"""Table-driven tests of every planner branch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.api.common import Reason
from conveyor.api.pipeline import PipelineSpec
from conveyor.api.pipelinerun import PipelineRunStatus, StageStatus
from conveyor.engine.planner import RunFacts, admitted, plan_run, refused, waiting

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# a -> b -> d, a -> c -> d, and e independent
SPEC = PipelineSpec.model_validate(
    {
        "stages": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x", "dependsOn": ["a"]},
            {"name": "c", "image": "x", "dependsOn": ["a"]},
            {"name": "d", "image": "x", "dependsOn": ["b", "c"]},
            {"name": "e", "image": "x"},
        ]
    }
)


def st(name: str, phase: str, message: str = "") -> StageStatus:
    return StageStatus(name=name, phase=phase, message=message)


def observed(**phases: str) -> dict[str, StageStatus]:
    return {name: st(name, phase) for name, phase in phases.items()}


CASES = [
    # (id, observed, cancelled, now offset s, start, run phase, reason, stop)
    ("fresh run starts roots", {}, False, 0, ["a", "e"], "Running", "Running", []),
    (
        "fan out after root",
        observed(a="Succeeded", e="Running"),
        False,
        0,
        ["b", "c"],
        "Running",
        "Running",
        [],
    ),
    (
        "join waits for both",
        observed(a="Succeeded", b="Succeeded", c="Running", e="Succeeded"),
        False,
        0,
        [],
        "Running",
        "Running",
        [],
    ),
    (
        "join starts when both done",
        observed(a="Succeeded", b="Succeeded", c="Succeeded", e="Succeeded"),
        False,
        0,
        ["d"],
        "Running",
        "Running",
        [],
    ),
    (
        "all done",
        observed(a="Succeeded", b="Succeeded", c="Succeeded", d="Succeeded", e="Succeeded"),
        False,
        0,
        [],
        "Succeeded",
        "Succeeded",
        [],
    ),
    (
        "failure waits for running stages",
        observed(a="Succeeded", b="Failed", c="Running", e="Running"),
        False,
        0,
        [],
        "Running",
        "Running",
        [],
    ),
    (
        "failure ends the run",
        observed(a="Failed", e="Succeeded"),
        False,
        0,
        [],
        "Failed",
        "StageFailed",
        [],
    ),
    (
        "failure starts nothing new",
        observed(a="Succeeded", b="Failed", c="Running"),
        False,
        0,
        [],
        "Running",
        "Running",
        [],
    ),
    (
        "cancel stops running",
        observed(a="Running", e="Running"),
        True,
        0,
        [],
        "Cancelled",
        "Cancelled",
        ["a", "e"],
    ),
    ("timeout fails", observed(a="Running"), False, 120, [], "Failed", "TimedOut", ["a"]),
]


@pytest.mark.parametrize(
    ("obs", "cancelled", "offset", "start", "phase", "reason", "stop"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_plan(
    obs: dict[str, StageStatus],
    cancelled: bool,
    offset: int,
    start: list[str],
    phase: str,
    reason: str,
    stop: list[str],
) -> None:
    facts = RunFacts(
        stages=obs,
        now=T0 + timedelta(seconds=offset),
        start_time=T0,
        cancelled=cancelled,
        timeout_seconds=60,
    )
    plan = plan_run(SPEC, facts)
    assert sorted(plan.start) == start
    assert plan.status.phase == phase
    cond = plan.status.conditions[0]
    assert (cond.type, cond.reason) == ("Succeeded", reason)
    assert cond.status == {"Succeeded": "True", "Running": "Unknown"}.get(phase, "False")
    assert sorted(plan.stop) == stop
    assert [s.name for s in plan.status.stages] == ["a", "b", "c", "d", "e"]


def test_downstream_of_failure_is_skipped_and_message_names_the_stage() -> None:
    obs = {
        "a": st("a", "Succeeded"),
        "b": st("b", "Failed", "boom"),
        "c": st("c", "Succeeded"),
        "e": st("e", "Succeeded"),
    }
    plan = plan_run(SPEC, RunFacts(stages=obs, now=T0))
    phases = {s.name: s.phase for s in plan.status.stages}
    assert phases["d"] == "Skipped"
    assert plan.status.conditions[0].message == "stage 'b' failed: boom"
    assert plan.status.completion_time == T0


def test_planning_twice_on_the_same_facts_is_idempotent() -> None:
    facts = RunFacts(stages=observed(a="Succeeded"), now=T0)
    first = plan_run(SPEC, facts)
    again = plan_run(SPEC, facts, first.status)
    assert again.start == first.start
    assert again.status == first.status
    assert again.events == []  # no transition, no event


def test_events_only_on_transitions() -> None:
    first = plan_run(SPEC, RunFacts(stages={}, now=T0))
    assert [e[0] for e in first.events] == ["Running"]
    done = observed(a="Succeeded", b="Succeeded", c="Succeeded", d="Succeeded", e="Succeeded")
    final = plan_run(SPEC, RunFacts(stages=done, now=T0 + timedelta(seconds=5)), first.status)
    assert [e[0] for e in final.events] == ["Succeeded"]
    assert final.status.start_time == T0
    cond = final.status.conditions[0]
    assert cond.last_transition_time == T0 + timedelta(seconds=5)


def test_previous_status_keeps_start_time() -> None:
    prev = PipelineRunStatus(start_time=T0 - timedelta(hours=1))
    plan = plan_run(SPEC, RunFacts(stages={}, now=T0), prev)
    assert plan.status.start_time == T0 - timedelta(hours=1)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (42.4, "42s"), (185, "3m5s"), (7440, "2h4m")])
def test_duration_format(seconds: float, text: str) -> None:
    from conveyor.engine.planner import format_duration

    assert format_duration(seconds) == text


def test_finished_run_has_a_duration() -> None:
    done = observed(a="Succeeded", b="Succeeded", c="Succeeded", d="Succeeded", e="Succeeded")
    plan = plan_run(SPEC, RunFacts(stages=done, now=T0 + timedelta(seconds=75), start_time=T0))
    assert plan.status.duration == "1m15s"


# before the run starts --------------------------------------------------------------------
WAITING = [
    ("first wait: an event", None, "PipelineNotFound", True),
    ("same reason again: no event", "PipelineNotFound", "PipelineNotFound", False),
    ("another reason: an event", "PipelineNotFound", "Queued", True),
]


@pytest.mark.parametrize(("before", "reason", "event"), [c[1:] for c in WAITING], ids=[c[0] for c in WAITING])
def test_waiting(before: str | None, reason: str, event: bool) -> None:
    previous = PipelineRunStatus()
    if before is not None:
        previous = waiting(previous, Reason(before), "m0", 1, T0).status
    plan = waiting(previous, Reason(reason), "why", 2, T0 + timedelta(seconds=5))
    cond = plan.status.conditions[0]
    assert plan.status.phase == "Pending" and plan.status.observed_generation == 2
    assert (cond.status, cond.reason, cond.message) == ("Unknown", reason, "why")
    assert plan.events == ([(reason, "why")] if event else [])
    assert not plan.finished and plan.start == []


def test_refused_fails_the_run_and_says_why() -> None:
    plan = refused(PipelineRunStatus(), "spec.stages: empty", 3, T0)
    cond = plan.status.conditions[0]
    assert plan.finished and plan.status.phase == "Failed" and plan.status.completion_time == T0
    assert (cond.status, cond.reason, cond.message) == ("False", "InvalidSpec", "spec.stages: empty")
    assert plan.events == [("InvalidSpec", "spec.stages: empty")]


@pytest.mark.parametrize("started", [None, T0 - timedelta(minutes=1)], ids=["fresh", "started before"])
def test_admitted_keeps_an_earlier_start(started: datetime | None) -> None:
    previous = PipelineRunStatus(start_time=started)
    status = admitted(previous, T0)
    assert status.phase == "Running" and status.start_time == (started or T0)
    assert previous.phase != "Running"  # the snapshot it was given is left as it was
