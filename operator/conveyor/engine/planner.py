"""The run planner: (pipeline, observed stage states, now) -> (actions, new status). Pure.

Both executors call it after every observation; it never remembers anything, so running it
again on the same facts gives the same answer (level-triggered, idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from conveyor.api.common import Condition, Reason
from conveyor.api.pipeline import PipelineSpec
from conveyor.api.pipelinerun import (
    FINISHED_RUN_PHASES,
    PipelineRunStatus,
    RunPhase,
    StagePhase,
    StageStatus,
)
from conveyor.engine.conditions import set_condition
from conveyor.engine.dag import ancestors

SUCCEEDED = "Succeeded"
ENDED = (StagePhase.FAILED, StagePhase.SKIPPED, StagePhase.CANCELLED)


@dataclass(frozen=True)
class RunFacts:
    """What the executor observed about the run as a whole."""

    stages: dict[str, StageStatus]
    now: datetime
    start_time: datetime | None = None
    cancelled: bool = False
    timeout_seconds: int | None = None
    generation: int | None = None


@dataclass
class RunPlan:
    start: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    status: PipelineRunStatus = field(default_factory=PipelineRunStatus)
    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status.phase in FINISHED_RUN_PHASES


def plan_run(spec: PipelineSpec, facts: RunFacts, previous: PipelineRunStatus | None = None) -> RunPlan:
    edges = {s.name: list(s.depends_on) for s in spec.stages}
    stages = {
        s.name: facts.stages.get(s.name) or StageStatus(name=s.name, phase=StagePhase.PENDING)
        for s in spec.stages
    }
    running = [n for n, s in stages.items() if s.phase == StagePhase.RUNNING]
    failed = [n for n, s in stages.items() if s.phase == StagePhase.FAILED]
    timed_out = _timed_out(facts)
    plan = RunPlan()

    if facts.cancelled or timed_out:
        return _stop_all(plan, spec, stages, facts, previous, running, timed_out)
    for name in _pending(stages):
        upstream = ancestors(edges, name)
        if any(stages[d].phase in ENDED for d in upstream):
            stages[name] = stages[name].model_copy(
                update={"phase": StagePhase.SKIPPED, "message": "an upstream stage did not succeed"}
            )
        elif not failed and all(stages[d].phase == StagePhase.SUCCEEDED for d in edges[name]):
            plan.start.append(name)

    if failed and not running:
        first = failed[0]
        message = f"stage {first!r} failed: {stages[first].message or 'no message'}"
        return _finish(plan, spec, stages, facts, previous, RunPhase.FAILED, Reason.STAGE_FAILED, message)
    if all(s.phase == StagePhase.SUCCEEDED for s in stages.values()):
        return _finish(
            plan,
            spec,
            stages,
            facts,
            previous,
            RunPhase.SUCCEEDED,
            Reason.SUCCEEDED,
            f"all {len(stages)} stages succeeded",
        )

    active = running + plan.start
    status = _status(spec, stages, facts, previous, RunPhase.RUNNING)
    status.current_stage = ",".join(active) or None
    cond = Condition(
        type=SUCCEEDED,
        status="Unknown",
        reason=Reason.RUNNING,
        message=f"running: {', '.join(active)}" if active else "waiting",
        observed_generation=facts.generation,
    )
    status.conditions = set_condition(status.conditions, cond, facts.now)
    plan.status = status
    if previous is None or previous.phase != RunPhase.RUNNING:
        plan.events.append((Reason.RUNNING, "the run started"))
    return plan


def _pending(stages: dict[str, StageStatus]) -> list[str]:
    return [name for name, st in stages.items() if st.phase == StagePhase.PENDING]


def _stop_all(
    plan: RunPlan,
    spec: PipelineSpec,
    stages: dict[str, StageStatus],
    facts: RunFacts,
    previous: PipelineRunStatus | None,
    running: list[str],
    timed_out: bool,
) -> RunPlan:
    """Cancelled or out of time: stop what runs, and no stage starts any more."""
    plan.stop = running
    for name, st in stages.items():
        if st.phase in (StagePhase.PENDING, StagePhase.RUNNING):
            stages[name] = st.model_copy(update={"phase": StagePhase.CANCELLED, "finish_time": facts.now})
    if timed_out:
        phase, reason = RunPhase.FAILED, Reason.TIMED_OUT
        message = f"the run exceeded its timeout of {facts.timeout_seconds}s"
    else:
        phase, reason, message = RunPhase.CANCELLED, Reason.CANCELLED, "the run was cancelled"
    return _finish(plan, spec, stages, facts, previous, phase, reason, message)


def _timed_out(facts: RunFacts) -> bool:
    if facts.timeout_seconds is None or facts.start_time is None:
        return False
    return facts.now - facts.start_time > timedelta(seconds=facts.timeout_seconds)


def _status(
    spec: PipelineSpec,
    stages: dict[str, StageStatus],
    facts: RunFacts,
    previous: PipelineRunStatus | None,
    phase: RunPhase,
) -> PipelineRunStatus:
    base = previous.model_copy(deep=True) if previous else PipelineRunStatus()
    base.phase = phase
    base.observed_generation = facts.generation
    base.start_time = base.start_time or facts.start_time or facts.now
    base.stages = [stages[s.name] for s in spec.stages]
    return base


def _finish(
    plan: RunPlan,
    spec: PipelineSpec,
    stages: dict[str, StageStatus],
    facts: RunFacts,
    previous: PipelineRunStatus | None,
    phase: RunPhase,
    reason: Reason,
    message: str,
) -> RunPlan:
    plan.start = []
    if phase == RunPhase.FAILED:
        for name, st in stages.items():
            if st.phase == StagePhase.PENDING:
                stages[name] = st.model_copy(
                    update={"phase": StagePhase.SKIPPED, "message": "not run: the run failed"}
                )
    status = _status(spec, stages, facts, previous, phase)
    status.current_stage = None
    status.completion_time = status.completion_time or facts.now
    if status.start_time is not None:
        status.duration = format_duration((status.completion_time - status.start_time).total_seconds())
    cond = Condition(
        type=SUCCEEDED,
        status="True" if phase == RunPhase.SUCCEEDED else "False",
        reason=reason,
        message=message,
        observed_generation=facts.generation,
    )
    status.conditions = set_condition(status.conditions, cond, facts.now)
    plan.status = status
    if previous is None or previous.phase != phase:
        plan.events.append((reason, message))
    return plan


def format_duration(seconds: float) -> str:
    """`42s`, `3m5s`, `2h4m`: what `kubectl get` shows as DURATION."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


# before the run starts: waiting, refused, admitted -------------------------------------------
def waiting(
    previous: PipelineRunStatus, reason: Reason, message: str, generation: int | None, now: datetime
) -> RunPlan:
    """A run that cannot start yet (its Pipeline is missing or invalid, or it is queued): Pending
    with the reason; an event only when the reason changes."""
    status = previous.model_copy(deep=True)
    status.phase = RunPhase.PENDING
    status.observed_generation = generation
    cond = Condition(
        type=SUCCEEDED, status="Unknown", reason=reason, message=message, observed_generation=generation
    )
    status.conditions = set_condition(status.conditions, cond, now)
    before = next((c for c in previous.conditions if c.type == SUCCEEDED), None)
    events: list[tuple[str, str]] = [(reason, message)]
    return RunPlan(status=status, events=[] if before is not None and before.reason == reason else events)


def refused(previous: PipelineRunStatus, message: str, generation: int | None, now: datetime) -> RunPlan:
    """A run whose pipeline can never run as given (an invalid spec): Failed, with why."""
    status = previous.model_copy(deep=True)
    status.phase = RunPhase.FAILED
    status.completion_time = now
    cond = Condition(
        type=SUCCEEDED,
        status="False",
        reason=Reason.INVALID_SPEC,
        message=message,
        observed_generation=generation,
    )
    status.conditions = set_condition(status.conditions, cond, now)
    return RunPlan(status=status, events=[(Reason.INVALID_SPEC, message)])


def admitted(previous: PipelineRunStatus, now: datetime) -> PipelineRunStatus:
    """A queued run given a slot: Running from now (written before its stages start, so other
    runs' admissions count it)."""
    return previous.model_copy(
        update={"phase": RunPhase.RUNNING, "start_time": previous.start_time or now}, deep=True
    )


# after the run: a model that awaits a human's approval ---------------------------------------
AWAITING_APPROVAL = "AwaitingApproval"


def plan_approval(status: PipelineRunStatus, generation: int | None, now: datetime) -> RunPlan:
    """The AwaitingApproval condition from the run's model (`promotion: Manual`): True while it
    is Pending, False with the reason Approved or Rejected once a human decided, absent when no
    approval was asked for; an event when the reason changes."""
    model = status.model
    if model is None or model.approval is None:
        return RunPlan(status=status)
    if model.approval == "Pending":
        cond = Condition(
            type=AWAITING_APPROVAL,
            status="True",
            reason=Reason.AWAITING_APPROVAL,
            message=f"{model.decision}; approve or reject it by setting spec.approval "
            '(e.g. {"decision": "Approve", "by": "<you>"})',
            observed_generation=generation,
        )
    else:
        reason = Reason.APPROVED if model.approval == "Approved" else Reason.REJECTED
        cond = Condition(
            type=AWAITING_APPROVAL,
            status="False",
            reason=reason,
            message=model.decision,
            observed_generation=generation,
        )
    before = next((c for c in status.conditions if c.type == AWAITING_APPROVAL), None)
    out = status.model_copy(deep=True)
    out.observed_generation = generation
    out.conditions = set_condition(out.conditions, cond, now)
    changed = before is None or before.reason != cond.reason
    return RunPlan(status=out, events=[(cond.reason, cond.message)] if changed else [])
