"""Reconciling a Pipeline: validate it (Ready), create runs on its schedule, prune history."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from conveyor.api.common import Condition, Reason
from conveyor.api.pipeline import Pipeline, PipelineStatus
from conveyor.api.pipelinerun import FINISHED_RUN_PHASES
from conveyor.artifacts import layout
from conveyor.engine.conditions import set_condition
from conveyor.engine.patches import status_patch
from conveyor.engine.schedule import due_time, run_name_for
from conveyor.engine.validation import InvalidResource, Problem, check_pipeline_spec, pydantic_problems
from conveyor.kube.client import PIPELINERUNS, PIPELINES, Body, KubeClient
from conveyor.kube.manifests import Owner, desired_triggered_run
from conveyor.kube.stores import StoreResolver

Kick = Callable[[str, str], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


def runs_of(runs: list[Body], pipeline: str) -> list[Body]:
    return [r for r in runs if (r.get("spec", {}).get("pipelineRef") or {}).get("name") == pipeline]


def _phase(run: Body) -> str:
    return str((run.get("status") or {}).get("phase") or "Pending")


class PipelineReconciler:
    def __init__(
        self, kube: KubeClient, stores: StoreResolver, kick: Kick, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.kube = kube
        self.stores = stores
        self.kick = kick  # reconcile a run now
        self.clock = clock

    async def reconcile(self, namespace: str, name: str) -> None:
        body = await self.kube.get(PIPELINES, namespace, name)
        if body is None:
            return
        previous = PipelineStatus.model_validate(body.get("status") or {})
        problems, pipeline = self._check(body)
        status = previous.model_copy(deep=True)
        status.observed_generation = body["metadata"].get("generation")
        now = self.clock()
        if problems:
            message = "; ".join(map(str, problems))
            cond = Condition(
                type="Ready",
                status="False",
                reason=Reason.INVALID_SPEC,
                message=message,
                observed_generation=status.observed_generation,
            )
        else:
            cond = Condition(
                type="Ready",
                status="True",
                reason=Reason.VALID,
                message="the pipeline is valid",
                observed_generation=status.observed_generation,
            )
        before = next((c for c in previous.conditions if c.type == "Ready"), None)
        status.conditions = set_condition(status.conditions, cond, now)
        runs = runs_of(await self.kube.list(PIPELINERUNS, namespace), name)
        if pipeline is not None and not problems:
            status.champion = await asyncio.to_thread(self._champion, pipeline, namespace, name)
            if pipeline.spec.schedule:
                status.last_schedule_time = await self._schedule(pipeline, body, runs, previous)
            await self._prune(pipeline, namespace, runs)
        if status.model_dump() != previous.model_dump():
            patch = status_patch(body.get("status"), status)
            await self.kube.patch(PIPELINES, namespace, name, patch, sub="status")
        if before is None or before.status != cond.status:
            await self.kube.post_event(
                body,
                "Normal" if not problems else "Warning",
                cond.reason,
                cond.message,
                now,
            )
        if not problems:
            for run in runs:  # runs that waited for this pipeline to appear or be fixed
                if _phase(run) == "Pending":
                    await self.kick(namespace, run["metadata"]["name"])

    async def run_finished(self, namespace: str, name: str) -> None:
        """A run of this pipeline finished: only queues and history care."""
        body = await self.kube.get(PIPELINES, namespace, name)
        spec = (body or {}).get("spec") or {}
        if spec.get("maxConcurrentRuns") is not None or spec.get("historyLimit") is not None:
            await self.reconcile(namespace, name)

    def _check(self, body: Body) -> tuple[list[Problem], Pipeline | None]:
        try:
            pipeline = Pipeline.model_validate(body)
        except ValidationError as err:
            return pydantic_problems(err, ""), None
        problems = check_pipeline_spec(pipeline.spec, "spec")
        try:
            self.stores.spec_for(pipeline.spec)
        except InvalidResource as err:
            problems += err.problems
        return problems, pipeline

    def _champion(self, pipeline: Pipeline, namespace: str, name: str) -> str | None:
        store, _ = self.stores.for_pipeline(pipeline.spec)
        champion = layout.read_champion(store, namespace, name)
        return champion.model.uri if champion else None

    async def _schedule(
        self, pipeline: Pipeline, body: Body, runs: list[Body], previous: PipelineStatus
    ) -> str:
        now = self.clock()
        spec = pipeline.spec
        assert spec.schedule is not None
        last = datetime.fromisoformat(previous.last_schedule_time) if previous.last_schedule_time else None
        due = due_time(spec.schedule, last, now)
        if due is None:
            return previous.last_schedule_time or now.isoformat()
        active = [r for r in runs if _phase(r) not in FINISHED_RUN_PHASES]
        if active and spec.concurrency_policy == "Forbid":
            return due.isoformat()
        if spec.concurrency_policy == "Replace":
            for run in active:
                await self.kube.patch(
                    PIPELINERUNS,
                    run["metadata"]["namespace"],
                    run["metadata"]["name"],
                    {"spec": {"cancelled": True}},
                )
        meta = body["metadata"]
        owner = Owner("Pipeline", meta["name"], meta.get("uid", ""), meta["namespace"])
        name = run_name_for(meta["name"], due)
        await self.kube.create(
            PIPELINERUNS,
            meta["namespace"],
            desired_triggered_run(name, meta["namespace"], meta["name"], "schedule", owner=owner),
        )
        return due.isoformat()

    async def _prune(self, pipeline: Pipeline, namespace: str, runs: list[Body]) -> None:
        limit = pipeline.spec.history_limit
        if limit is None:
            return
        finished = sorted(
            (r for r in runs if _phase(r) in FINISHED_RUN_PHASES),
            key=lambda r: ((r.get("status") or {}).get("completionTime") or "", r["metadata"]["name"]),
        )
        for run in finished[: max(0, len(finished) - limit)]:
            await self.kube.delete(PIPELINERUNS, namespace, run["metadata"]["name"])
