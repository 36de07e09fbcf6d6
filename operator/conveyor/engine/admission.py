"""Admission of PipelineRuns under a Pipeline's `maxConcurrentRuns`: which waiting run may start
now, and what a queued one is told. Pure: the caller lists the runs and writes the outcome.

The queue is the pipeline's Pending runs that are not cancelled, oldest first (creation time,
then name); the free slots are `maxConcurrentRuns` minus its Running runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.api.pipelinerun import FINISHED_RUN_PHASES, RunPhase


@dataclass(frozen=True)
class RunSummary:
    """What a Pipeline and its queue need to know of one PipelineRun."""

    name: str
    pipeline: str | None  # spec.pipelineRef.name (None for an inline pipelineSpec)
    phase: str  # status.phase, "Pending" when there is no status yet
    cancelled: bool
    created: str  # metadata.creationTimestamp ("" if missing)
    completion: str  # status.completionTime ("" if missing)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RunSummary:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        return cls(
            name=str(meta.get("name") or ""),
            pipeline=(spec.get("pipelineRef") or {}).get("name"),
            phase=str(status.get("phase") or RunPhase.PENDING),
            cancelled=bool(spec.get("cancelled")),
            created=str(meta.get("creationTimestamp") or ""),
            completion=str(status.get("completionTime") or ""),
        )

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_RUN_PHASES


@dataclass(frozen=True)
class Admission:
    admitted: bool
    queue_depth: int  # waiting runs beyond the free slots (the QUEUE_DEPTH gauge)
    message: str  # why it waits ("" when admitted)


def admit(run: str, runs: Sequence[RunSummary], limit: int | None, pipeline: str) -> Admission:
    """Whether the Pending run `run` of `pipeline` may start, given all `runs` observed (runs of
    other pipelines are ignored). A run missing from `runs` (a list older than it) counts as
    first in the queue."""
    if limit is None:
        return Admission(admitted=True, queue_depth=0, message="")
    mine = [r for r in runs if r.pipeline == pipeline]
    active = [r for r in mine if r.phase == RunPhase.RUNNING]
    queue = sorted(
        (r for r in mine if r.phase == RunPhase.PENDING and not r.cancelled),
        key=lambda r: (r.created, r.name),
    )
    waiting = [r.name for r in queue]
    free = limit - len(active)
    position = waiting.index(run) if run in waiting else 0
    depth = max(0, len(waiting) - max(free, 0))
    if position < free:
        return Admission(admitted=True, queue_depth=depth, message="")
    message = (
        f"waiting: {len(active)} of at most {limit} "
        f"runs of {pipeline!r} are running; {position - free + 1} ahead"
    )
    return Admission(admitted=False, queue_depth=depth, message=message)
