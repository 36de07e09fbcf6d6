"""Reconciling a Pipeline, as glue: get → observe (its problems, the runs, the champion in the
store) → `engine.pipelines.plan_pipeline` → apply (cancel, create, prune runs) → write status →
events → kick the runs that waited for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from conveyor.api.pipeline import Pipeline, PipelineStatus
from conveyor.artifacts import layout
from conveyor.engine.admission import RunSummary
from conveyor.engine.patches import status_patch
from conveyor.engine.pipelines import PipelineFacts, PipelinePlan, plan_pipeline
from conveyor.engine.validation import InvalidResource, Problem, check_pipeline_spec, pydantic_problems
from conveyor.kube.client import PIPELINERUNS, PIPELINES, Body, KubeClient
from conveyor.kube.manifests import Owner, desired_triggered_run
from conveyor.kube.stores import StoreResolver

log = logging.getLogger(__name__)

Kick = Callable[[str, str], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        facts = await self._observe(body, namespace, name)
        plan = plan_pipeline(facts, previous)
        await self._apply(plan, body, namespace, name)
        if plan.status_changed:
            patch = status_patch(body.get("status"), plan.status)
            await self.kube.patch(PIPELINES, namespace, name, patch, sub="status")
        for event in plan.events:
            await self.kube.post_event(body, event.type, event.reason, event.message, facts.now)
        for run in plan.kick:
            await self.kick(namespace, run)

    async def run_finished(self, namespace: str, name: str) -> None:
        """A run of this pipeline finished: only queues and history care."""
        body = await self.kube.get(PIPELINES, namespace, name)
        spec = (body or {}).get("spec") or {}
        if spec.get("maxConcurrentRuns") is not None or spec.get("historyLimit") is not None:
            await self.reconcile(namespace, name)

    # observe: reads only ---------------------------------------------------------------------
    async def _observe(self, body: Body, namespace: str, name: str) -> PipelineFacts:
        problems, pipeline = self._check(body)
        runs = [RunSummary.from_body(r) for r in await self.kube.list(PIPELINERUNS, namespace)]
        champion = None
        if pipeline is not None and not problems:  # an invalid pipeline's store may not resolve
            champion = await asyncio.to_thread(self._champion, pipeline, namespace, name)
        return PipelineFacts(
            name=name,
            generation=body["metadata"].get("generation"),
            spec=pipeline.spec if pipeline is not None else None,
            problems=problems,
            runs=runs,
            champion=champion,
            now=self.clock(),
        )

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
        """The champion's model URI (blocking: boto3)."""
        store, _ = self.stores.for_pipeline(pipeline.spec)
        try:
            champion = layout.read_champion(store, namespace, name)
        except layout.CorruptRecord as err:  # runs say it where they read it; keep reconciling
            log.warning("pipeline %s/%s: %s", namespace, name, err)
            return None
        return champion.model.uri if champion else None

    # apply -----------------------------------------------------------------------------------
    async def _apply(self, plan: PipelinePlan, body: Body, namespace: str, name: str) -> None:
        for run in plan.cancel:
            await self.kube.patch(PIPELINERUNS, namespace, run, {"spec": {"cancelled": True}})
        if plan.create is not None:
            owner = Owner("Pipeline", name, body["metadata"].get("uid", ""), namespace)
            run_body = desired_triggered_run(plan.create, namespace, name, "schedule", owner=owner)
            await self.kube.create(PIPELINERUNS, namespace, run_body)
        for run in plan.delete:
            await self.kube.delete(PIPELINERUNS, namespace, run)
