"""Facts about a run's stages from what the world shows: Job summaries and the store.

A stage without a Job is Succeeded when this run recorded it running or done and its outputs
are committed in the run's prefix (a cache hit or a reused stage is committed there as a
pointer), else as the status last recorded a terminal phase, else Pending.
"""

from __future__ import annotations

from datetime import datetime

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.pipelinerun import PipelineRunStatus, StagePhase, StageStatus
from conveyor.artifacts import layout
from conveyor.artifacts.layout import StageResult
from conveyor.engine.dag import topological_order
from conveyor.engine.patches import finite_metrics
from conveyor.kube import metrics
from conveyor.kube.manifests import Owner
from conveyor.kube.observe import Body, JobFacts, controller_of, observe_job
from conveyor.orchestration import RunContext


def succeeded(st: StageStatus, result: StageResult) -> StageStatus:
    """The stage's status from its committed result; a metric that is NaN or infinite (of a
    constant column, say) is left out, and the message names it."""
    metrics, dropped = finite_metrics(result.metrics)
    base = _reuse_message(result.reused_from) or st.message
    message = base if dropped in base else f"{base}; {dropped}" if base else dropped
    return st.model_copy(
        update={
            "phase": StagePhase.SUCCEEDED,
            "outputs": {k: v.uri for k, v in result.outputs.items()},
            "metrics": metrics,
            "cache_hit": result.reused_from == "cache",
            "message": message,
            "cache_key": result.cache_key or st.cache_key,
        }
    )


def name_taken(found: Body | None, owner: Owner, stage: str, now: datetime, cache_key: str) -> StageStatus:
    """A stage whose Job could not be created: its name is taken by `found`. By this run's own
    Job (one made before Jobs carried the run's UID label), it runs or failed as the Job says;
    its outputs are found once committed. By a Job of an earlier run object of the same name
    (deleted, created again), it is never taken as this run's: the stage waits until the
    garbage collector has deleted it (its owner is gone)."""
    ref = controller_of(found, "PipelineRun") if found is not None else None
    if found is not None and ref is not None and ref.get("uid") == owner.uid:
        facts = observe_job(found, [], None)
        failed = facts.phase == StagePhase.FAILED
        return StageStatus(
            name=stage,
            phase=StagePhase.FAILED if failed else StagePhase.RUNNING,
            attempts=facts.attempts,
            start_time=facts.start_time or now,
            finish_time=facts.finish_time if failed else None,
            message=facts.message,
            cache_key=cache_key,
        )
    whose = f"an earlier PipelineRun {owner.name!r}" if ref is not None else "another owner"
    job = (found or {}).get("metadata", {}).get("name", "")
    message = f"waiting: Job {job!r} of {whose} still exists; the stage starts when it is deleted"
    return StageStatus(name=stage, phase=StagePhase.PENDING, message=message)


def _reuse_message(reused_from: str | None) -> str:
    if reused_from == "cache":
        return "cache hit"
    if reused_from and reused_from.startswith("run:"):
        return f"reused from run {reused_from[4:]}"
    return ""


def observe_store(
    ctx: RunContext,
    spec: PipelineSpec,
    jobs: dict[str, JobFacts],
    previous: PipelineRunStatus,
    resume: str | None,
) -> tuple[dict[str, StageStatus], dict[str, StageResult]]:
    """Stage states from Job facts and the store, in dependency order. A stage without a Job
    is looked up in the store only if this run recorded it running or done (its Job may have
    been garbage-collected) or the run resumes another one: outputs in the run's prefix that
    this run never recorded are an earlier run object's of the same name (deleted, created
    again), never this one's. A stage that is merely ready starts; a cache hit is found then."""
    recorded = {s.name: s for s in previous.stages}
    edges = {s.name: list(s.depends_on) for s in spec.stages}
    stages: dict[str, StageStatus] = {}
    results: dict[str, StageResult] = {}
    for name in topological_order(edges):
        stage = spec.stage(name)
        before = recorded.get(name)
        facts = jobs.get(name)
        if facts is not None:
            st = StageStatus(
                name=name,
                phase=facts.phase,
                attempts=facts.attempts,
                start_time=facts.start_time,
                finish_time=facts.finish_time,
                message=facts.message,
                cache_key=facts.cache_key,
            )
            if facts.phase == StagePhase.SUCCEEDED:
                result = ctx.committed(name)
                if result is None and stage.image is not None:
                    result = ctx.commit_empty(name)
                if result is None:
                    st.phase = StagePhase.FAILED
                    st.message = "the stage's Job completed but it committed no outputs.json"
                else:
                    results[name] = result
                    st = succeeded(st, result)
                    first_seen = before is None or before.phase != StagePhase.SUCCEEDED
                    if stage.cache and facts.cache_key and first_seen:
                        layout.cache_record(ctx.store, facts.cache_key, result)
                    if first_seen and facts.start_time and facts.finish_time:
                        seconds = (facts.finish_time - facts.start_time).total_seconds()
                        metrics.STAGE_SECONDS.labels(stage=name).observe(max(0.0, seconds))
            stages[name] = st
            continue
        if before is not None and before.phase in ("Failed", "Skipped", "Cancelled"):
            stages[name] = before
            continue
        ran_before = before is not None and before.phase in ("Succeeded", "Running")
        if not (ran_before or resume):
            continue
        result = ctx.committed(name)
        if result is None and resume:
            result = ctx.committed(name, resume)
            if result is not None:
                result = result.model_copy(update={"reused_from": f"run:{resume}"})
                layout.commit_result(ctx.store, ctx.prefix(name), result)
        if result is not None:
            results[name] = result
            stages[name] = succeeded(before or StageStatus(name=name, phase=StagePhase.SUCCEEDED), result)
    return stages, results
