"""What a run's stages are, from what its launcher reports and what the store holds. Reads
only: the writes it finds due (an empty result to commit, a cache entry to record, a result
reused from an earlier run to point at) come back as `Write`s for `advance` to apply.

A stage its launcher reports is as the launcher says, except that a stage that exited 0 has
succeeded only once its outputs are committed. A stage the launcher does not report (its Job
was garbage-collected, or the operator restarted) is looked up in the store only if this run
recorded it running or done, or the run resumes another one: outputs in the run's prefix that
this run never recorded are an earlier run object's of the same name, never this one's. A stage
that is merely ready is started by `advance`; a cache hit is found then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from conveyor.api.pipelinerun import StagePhase, StageStatus
from conveyor.artifacts.layout import StageResult
from conveyor.engine.dag import topological_order
from conveyor.runs.context import RunContext
from conveyor.runs.results import reused_from_run, succeeded

ENDED = (StagePhase.FAILED, StagePhase.SKIPPED, StagePhase.CANCELLED)
NO_OUTPUTS = "the stage exited successfully but committed no outputs.json"


@dataclass(frozen=True)
class Write:
    """A store write a look found due: `empty` (a custom stage that wrote no outputs.json has
    none), `cache` (record a first-seen result under its cache key), `reuse` (point this run's
    prefix at an earlier run's result)."""

    kind: Literal["empty", "cache", "reuse"]
    stage: str
    result: StageResult
    cache_key: str = ""


@dataclass
class Observed:
    stages: dict[str, StageStatus] = field(default_factory=dict)
    results: dict[str, StageResult] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # stages first seen done: run time


def read_stages(
    ctx: RunContext,
    launched: dict[str, StageStatus],
    recorded: list[StageStatus],
    resume: str | None,
) -> Observed:
    """The stages' states, in dependency order (see the module's docstring)."""
    before = {s.name: s for s in recorded}
    seen = Observed()
    edges = {s.name: list(s.depends_on) for s in ctx.spec.stages}
    for name in topological_order(edges):
        if name in launched:
            _launched(ctx, name, launched[name], before.get(name), seen)
        else:
            _unlaunched(ctx, name, before.get(name), resume, seen)
    return seen


def _launched(
    ctx: RunContext, name: str, st: StageStatus, before: StageStatus | None, seen: Observed
) -> None:
    stage = ctx.spec.stage(name)
    if st.phase != StagePhase.SUCCEEDED:
        seen.stages[name] = st
        return
    result = ctx.committed(name)
    if result is None and stage.image is not None:
        result = StageResult()
        seen.writes.append(Write("empty", name, result))
    if result is None:
        seen.stages[name] = st.model_copy(update={"phase": StagePhase.FAILED, "message": NO_OUTPUTS})
        return
    seen.results[name] = result
    seen.stages[name] = succeeded(st, result)
    if before is not None and before.phase == StagePhase.SUCCEEDED:
        return  # recorded in an earlier look
    if stage.cache and st.cache_key:
        seen.writes.append(Write("cache", name, result, st.cache_key))
    if st.start_time and st.finish_time:
        seen.seconds[name] = max(0.0, (st.finish_time - st.start_time).total_seconds())


def _unlaunched(
    ctx: RunContext, name: str, before: StageStatus | None, resume: str | None, seen: Observed
) -> None:
    if before is not None and before.phase in ENDED:
        seen.stages[name] = before
        return
    ran_before = before is not None and before.phase in (StagePhase.SUCCEEDED, StagePhase.RUNNING)
    if not (ran_before or resume):
        return
    result = ctx.committed(name)
    if result is None and resume:
        earlier = ctx.committed(name, resume)
        if earlier is not None:
            result = earlier.model_copy(update={"reused_from": reused_from_run(resume)})
            seen.writes.append(Write("reuse", name, result))
    if result is not None:
        seen.results[name] = result
        seen.stages[name] = succeeded(before or StageStatus(name=name, phase=StagePhase.SUCCEEDED), result)
