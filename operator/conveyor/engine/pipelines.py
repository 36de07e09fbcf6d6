"""What reconciling a Pipeline should do: its Ready condition, the run its cron schedule makes
due (and, by its concurrencyPolicy, the runs that one skips or replaces), the finished runs its
historyLimit prunes, and the Pending runs that waited for it. Pure: no I/O, `now` is given.

The reconciler observes (the spec's problems, the runs, the champion in the store) and applies
the plan; running it twice on the same world plans nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from conveyor.api.common import Condition, Reason
from conveyor.api.pipeline import PipelineSpec, PipelineStatus
from conveyor.api.pipelinerun import RunPhase
from conveyor.engine.admission import RunSummary
from conveyor.engine.conditions import set_condition
from conveyor.engine.events import Event
from conveyor.engine.schedule import due_time, run_name_for
from conveyor.engine.validation import Problem


@dataclass(frozen=True)
class PipelineFacts:
    """The world as observed for one Pipeline."""

    name: str
    generation: int | None
    spec: PipelineSpec | None  # None when the body did not parse
    problems: Sequence[Problem]  # empty when the pipeline is valid
    runs: Sequence[RunSummary]  # PipelineRuns in its namespace (other pipelines' are ignored)
    champion: str | None  # the champion's model URI in the store (read only when valid)
    now: datetime


@dataclass(frozen=True)
class PipelinePlan:
    status: PipelineStatus
    status_changed: bool  # write it (the status subresource) only then
    create: str | None = None  # name of the scheduled run to create
    cancel: tuple[str, ...] = ()  # active runs replaced (concurrencyPolicy Replace)
    delete: tuple[str, ...] = ()  # finished runs beyond historyLimit, oldest first
    kick: tuple[str, ...] = ()  # Pending runs that waited for the pipeline to appear or be fixed
    events: tuple[Event, ...] = field(default=())


@dataclass(frozen=True)
class _Schedule:
    last_schedule_time: str | None
    create: str | None = None
    cancel: tuple[str, ...] = ()


def plan_pipeline(facts: PipelineFacts, previous: PipelineStatus) -> PipelinePlan:
    runs = [r for r in facts.runs if r.pipeline == facts.name]
    ready = _ready(facts)
    before = next((c for c in previous.conditions if c.type == "Ready"), None)
    update: dict[str, object] = {
        "observed_generation": facts.generation,
        "conditions": set_condition(previous.conditions, ready, facts.now),
    }
    schedule = _Schedule(previous.last_schedule_time)
    delete: tuple[str, ...] = ()
    spec = None if facts.problems else facts.spec  # None: invalid, nothing is acted on
    if spec is not None:
        update["champion"] = facts.champion
        if spec.schedule:
            schedule = _schedule(spec, facts.name, runs, previous, facts.now)
            update["last_schedule_time"] = schedule.last_schedule_time
        delete = _prune(spec.history_limit, runs)
    status = previous.model_copy(deep=True, update=update)
    events: tuple[Event, ...] = ()
    if before is None or before.status != ready.status:
        events = (Event("Normal" if spec is not None else "Warning", ready.reason, ready.message),)
    return PipelinePlan(
        status=status,
        status_changed=status.model_dump() != previous.model_dump(),
        create=schedule.create,
        cancel=schedule.cancel,
        delete=delete,
        kick=tuple(r.name for r in runs if r.phase == RunPhase.PENDING) if spec is not None else (),
        events=events,
    )


def _ready(facts: PipelineFacts) -> Condition:
    if facts.problems or facts.spec is None:
        return Condition(
            type="Ready",
            status="False",
            reason=Reason.INVALID_SPEC,
            message="; ".join(map(str, facts.problems)),
            observed_generation=facts.generation,
        )
    return Condition(
        type="Ready",
        status="True",
        reason=Reason.VALID,
        message="the pipeline is valid",
        observed_generation=facts.generation,
    )


def _schedule(
    spec: PipelineSpec, name: str, runs: list[RunSummary], previous: PipelineStatus, now: datetime
) -> _Schedule:
    """The run due by the cron schedule, if any, and the lastScheduleTime to record. The first
    visit only starts the clock; a due time whose run exists already (made by an earlier
    reconcile whose status write was lost) is done."""
    assert spec.schedule is not None
    last = datetime.fromisoformat(previous.last_schedule_time) if previous.last_schedule_time else None
    due = due_time(spec.schedule, last, now, spec.time_zone)
    if due is None:
        return _Schedule(previous.last_schedule_time or now.isoformat())
    run = run_name_for(name, due)
    active = [r for r in runs if not r.finished]
    if any(r.name == run for r in runs) or (active and spec.concurrency_policy == "Forbid"):
        return _Schedule(due.isoformat())
    cancel: tuple[str, ...] = ()
    if spec.concurrency_policy == "Replace":
        cancel = tuple(r.name for r in active if not r.cancelled)
    return _Schedule(due.isoformat(), create=run, cancel=cancel)


def _prune(limit: int | None, runs: list[RunSummary]) -> tuple[str, ...]:
    """Finished runs beyond `limit`, the earliest completed first; unfinished runs are kept."""
    if limit is None:
        return ()
    finished = sorted((r for r in runs if r.finished), key=lambda r: (r.completion, r.name))
    return tuple(r.name for r in finished[: max(0, len(finished) - limit)])
