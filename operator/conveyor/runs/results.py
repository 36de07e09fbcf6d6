"""A stage's status from its committed result: one rule for a stage that ran, a cache hit and
a stage reused from an earlier run, whichever executor saw it."""

from __future__ import annotations

from datetime import datetime

from conveyor.api.pipelinerun import StagePhase, StageStatus
from conveyor.artifacts.layout import StageResult
from conveyor.engine.patches import finite_metrics

CACHE = "cache"
RUN_PREFIX = "run:"


def reused_from_run(run: str) -> str:
    """The `reused_from` of a result taken over from an earlier run."""
    return RUN_PREFIX + run


def reuse_message(reused_from: str | None) -> str:
    if reused_from == CACHE:
        return "cache hit"
    if reused_from and reused_from.startswith(RUN_PREFIX):
        return f"reused from run {reused_from.removeprefix(RUN_PREFIX)}"
    return ""


def succeeded(st: StageStatus, result: StageResult) -> StageStatus:
    """The stage's status from its committed result; a metric that is NaN or infinite (of a
    constant column, say) is left out, and the message names it."""
    metrics, dropped = finite_metrics(result.metrics)
    base = reuse_message(result.reused_from) or st.message
    message = base if dropped in base else f"{base}; {dropped}" if base else dropped
    return st.model_copy(
        update={
            "phase": StagePhase.SUCCEEDED,
            "outputs": {k: v.uri for k, v in result.outputs.items()},
            "metrics": metrics,
            "cache_hit": result.reused_from == CACHE,
            "message": message,
            "cache_key": result.cache_key or st.cache_key,
        }
    )


def cache_hit(name: str, result: StageResult, now: datetime) -> StageStatus:
    """A stage answered from the cache: done the moment it was ready, no attempt made."""
    return succeeded(
        StageStatus(name=name, phase=StagePhase.SUCCEEDED, start_time=now, finish_time=now),
        result,
    )
