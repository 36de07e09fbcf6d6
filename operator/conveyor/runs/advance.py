"""One step of a run, the same for both executors: observe → plan → apply.

`advance` asks the launcher what its stages are doing, reads the store (`observe`), applies
the writes that look found due, then plans (`engine.planner.plan_run`) and acts until the plan
asks for nothing new: it stops what the plan stops, answers a ready stage from the cache or
has the launcher start it, and plans again (a cache hit can make the next stage ready at
once). When the run has finished it records the model and writes the run record.

The caller owns the loop: the local executor calls `advance` until the run finishes, the
operator once per reconcile, and each writes the returned status its own way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from conveyor.api.pipeline import Stage
from conveyor.api.pipelinerun import PipelineRunStatus, StagePhase, StageStatus
from conveyor.artifacts import layout
from conveyor.artifacts.layout import RunRecord, StageResult
from conveyor.engine.invocation import StageInvocation
from conveyor.engine.patches import finite_metrics
from conveyor.engine.planner import RunFacts, RunPlan, plan_run
from conveyor.runs.context import RunContext
from conveyor.runs.observe import Write, read_stages
from conveyor.runs.results import CACHE, cache_hit

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Launcher(Protocol):
    """How a stage becomes a process, and what it is doing: the only part of a run that
    differs between executors. Like a Job, a launcher retries a failed attempt itself (up to
    the stage's `retries`) and ends an attempt that outlives the stage's `timeoutSeconds`."""

    async def observe(self) -> dict[str, StageStatus]:
        """Every stage launched for this run that is still known: Running, Succeeded (it exited
        0; `advance` checks its outputs) or Failed (out of attempts), with attempts and times."""
        ...

    async def launch(self, stage: Stage, inv: StageInvocation, now: datetime) -> StageStatus:
        """Start the stage's first attempt: Running, or Pending with the reason it cannot start
        yet, or Failed."""
        ...

    async def stop(self, stage: str) -> None:
        """End the stage's attempt, if it runs."""
        ...


@dataclass(frozen=True)
class RunInputs:
    """What the executor knows about the run as a whole."""

    cancelled: bool = False
    timeout_seconds: int | None = None
    generation: int | None = None
    resume_from: str | None = None
    use_cache: bool = True


@dataclass
class Step:
    plan: RunPlan
    results: dict[str, StageResult]
    events: list[tuple[str, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # stages seen done: run time
    handoffs: list[float] = field(default_factory=list)  # seconds from ready to launched
    record: RunRecord | None = None  # written when the run finished

    @property
    def status(self) -> PipelineRunStatus:
        return self.plan.status


async def advance(
    ctx: RunContext,
    launcher: Launcher,
    previous: PipelineRunStatus,
    inputs: RunInputs,
    clock: Clock = utcnow,
) -> Step:
    """One observe → plan → apply step (see the module's docstring)."""
    launched = await launcher.observe()
    seen = await asyncio.to_thread(read_stages, ctx, launched, previous.stages, inputs.resume_from)
    await asyncio.to_thread(apply_writes, ctx, seen.writes)
    now = clock()
    step = Step(RunPlan(status=previous), seen.results, stage_seconds=seen.seconds)
    stages = dict(seen.stages)
    blocked: set[str] = set()  # stages the launcher could not start yet
    for _ in range(len(ctx.spec.stages) + 1):
        facts = RunFacts(
            stages=dict(stages),
            now=now,
            start_time=previous.start_time or now,
            cancelled=inputs.cancelled,
            timeout_seconds=inputs.timeout_seconds,
            generation=inputs.generation,
        )
        step.plan = plan_run(ctx.spec, facts, step.plan.status)
        step.events += step.plan.events
        for name in step.plan.stop:
            await launcher.stop(name)
        start = [name for name in step.plan.start if name not in blocked]
        if not start:
            break
        for name in start:
            stages[name] = await _start(ctx, launcher, name, stages, step, inputs, clock)
            if stages[name].phase == StagePhase.PENDING:
                blocked.add(name)
    if step.plan.finished:
        step.plan.status, step.record = await asyncio.to_thread(
            finish, ctx, step.plan.status, step.results, inputs.resume_from, now
        )
    return step


async def _start(
    ctx: RunContext,
    launcher: Launcher,
    name: str,
    stages: dict[str, StageStatus],
    step: Step,
    inputs: RunInputs,
    clock: Clock,
) -> StageStatus:
    """A ready stage: answered from the cache (its result committed to this run's prefix as a
    pointer), else launched."""
    stage = ctx.spec.stage(name)
    inv = await asyncio.to_thread(ctx.invocation, stage, step.results)
    now = clock()
    hit = await asyncio.to_thread(ctx.cache_hit, stage, inv) if inputs.use_cache else None
    if hit is not None:
        hit = hit.model_copy(update={"reused_from": CACHE})
        await asyncio.to_thread(apply_writes, ctx, [Write("reuse", name, hit)])
        step.results[name] = hit
        return cache_hit(name, hit, now)
    st = await launcher.launch(stage, inv, now)
    ready = [t for d in stage.depends_on if (t := stages[d].finish_time) is not None]
    if st.phase == StagePhase.RUNNING and ready:
        step.handoffs.append(max(0.0, (clock() - max(ready)).total_seconds()))
    return st


def apply_writes(ctx: RunContext, writes: list[Write]) -> None:
    for w in writes:
        if w.kind == "cache":
            layout.cache_record(ctx.store, w.cache_key, w.result)
            continue
        layout.commit_result(ctx.store, ctx.prefix(w.stage), w.result)
        ctx.known[w.stage] = w.result


def finish(
    ctx: RunContext,
    status: PipelineRunStatus,
    results: dict[str, StageResult],
    resume: str | None,
    now: datetime,
) -> tuple[PipelineRunStatus, RunRecord]:
    """The finished run's status (its model and metrics, where its record is) and its record."""
    model = ctx.model_record(results)
    if model is not None:
        model = model.model_copy(update={"metrics": finite_metrics(model.metrics)[0]})  # the stage's says why
    status = status.model_copy(
        update={"model": model, "metrics": dict(model.metrics) if model is not None else status.metrics}
    )
    record, uri = ctx.write_record(status, results, status.start_time or now, resume)
    return status.model_copy(update={"run_record": uri}), record
