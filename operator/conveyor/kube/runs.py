"""Reconciling a PipelineRun: read the world, plan, apply, write status. Idempotent.

Facts come from the world, never from memory: a stage is Running or finished as its Job (one
controlled by this very run object, by UID) says; a stage without a Job is as `runstate` reads
it from the store and the status last recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor.api.common import Condition, Reason
from conveyor.api.pipeline import Pipeline, PipelineSpec
from conveyor.api.pipelinerun import (
    FINISHED_RUN_PHASES,
    PipelineRun,
    PipelineRunStatus,
    RunPhase,
    StagePhase,
    StageStatus,
)
from conveyor.artifacts import layout
from conveyor.artifacts.layout import StageResult
from conveyor.engine.conditions import set_condition
from conveyor.engine.patches import finite_metrics, status_patch
from conveyor.engine.planner import RunFacts, plan_run
from conveyor.engine.validation import InvalidResource, check_pipeline_spec
from conveyor.kube import metrics
from conveyor.kube.client import JOBS, PIPELINERUNS, PIPELINES, PODS, Body, KubeClient
from conveyor.kube.manifests import RUN_UID_LABEL, Owner, desired_job, job_name, job_selector
from conveyor.kube.observe import JobFacts, controller_of, observe_job
from conveyor.kube.runstate import name_taken, observe_store, succeeded
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver
from conveyor.orchestration import RunContext, runtime_version

Clock = Callable[[], datetime]
_io = asyncio.to_thread  # the store client (boto3) blocks: keep it off the event loop


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Outcome:
    """What the caller should do next: nothing (finished), or look again after `requeue`."""

    finished: bool
    requeue: float | None = None
    pipeline: str | None = None  # set when the run finished in this reconcile: follow-ups are due


class RunReconciler:
    def __init__(
        self, kube: KubeClient, settings: Settings, stores: StoreResolver, clock: Clock = utcnow
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.stores = stores
        self.clock = clock
        self.locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.admission: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.version = runtime_version(settings.image)
        # per run (namespace, name) -> (its UID, the stage results already read from the store)
        self.known: dict[tuple[str, str], tuple[str, dict[str, StageResult]]] = {}

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        started = time.perf_counter()
        try:
            async with self.locks[(namespace, name)]:
                outcome = await self._reconcile(namespace, name)
                if outcome.finished:
                    self.known.pop((namespace, name), None)
                return outcome
        except Exception:
            metrics.RECONCILE_ERRORS.labels(kind="PipelineRun").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.labels(kind="PipelineRun").observe(time.perf_counter() - started)

    async def _reconcile(self, namespace: str, name: str) -> Outcome:
        body = await self.kube.get(PIPELINERUNS, namespace, name)
        if body is None:
            return Outcome(finished=True)
        run = PipelineRun.model_validate(body)
        previous = run.status or PipelineRunStatus()
        if previous.phase in FINISHED_RUN_PHASES:
            return Outcome(finished=True)
        pipeline_name = run.spec.pipeline_ref.name if run.spec.pipeline_ref else name
        spec = previous.pipeline_spec or run.spec.pipeline_spec
        if spec is None:
            spec = await self._pipeline(run, body, previous, pipeline_name)
            if spec is None:
                return Outcome(finished=False, requeue=self.settings.resync_seconds)
        try:
            store, s3 = self.stores.for_pipeline(spec)
            ctx = RunContext(
                spec,
                pipeline_name,
                namespace,
                name,
                store,
                run.spec.params,
                version=self.version,
                known=self._known(namespace, name, body["metadata"].get("uid", "")),
            )
        except InvalidResource as err:
            await self._fail_invalid(body, previous, run, "; ".join(map(str, err.problems)))
            return Outcome(finished=True)
        if previous.phase == RunPhase.PENDING and not run.spec.cancelled:
            admitted = await self._admit(run, body, spec, pipeline_name, previous)
            if not admitted:
                return Outcome(finished=False, requeue=self.settings.resync_seconds)
        owner = Owner("PipelineRun", name, body["metadata"].get("uid", ""), namespace)
        return await self._advance(run, body, spec, ctx, owner, previous, s3)

    def _known(self, namespace: str, name: str, uid: str) -> dict[str, StageResult]:
        """The results this run's reconciles have read (a run re-created under the same name
        starts afresh)."""
        held = self.known.get((namespace, name))
        if held is None or held[0] != uid:
            held = self.known[(namespace, name)] = (uid, {})
        return held[1]

    # the pipeline --------------------------------------------------------------------------
    async def _pipeline(
        self, run: PipelineRun, body: Body, previous: PipelineRunStatus, pipeline_name: str
    ) -> PipelineSpec | None:
        namespace = run.metadata.namespace or "default"
        raw = await self.kube.get(PIPELINES, namespace, pipeline_name)
        if raw is None:
            await self._waiting(
                body,
                previous,
                run,
                Reason.PIPELINE_NOT_FOUND,
                f"Pipeline {pipeline_name!r} not found in namespace {namespace!r};"
                " the run starts when it appears",
            )
            return None
        pipeline = Pipeline.model_validate(raw)
        problems = check_pipeline_spec(pipeline.spec, "spec")
        if problems:
            await self._waiting(
                body,
                previous,
                run,
                Reason.INVALID_SPEC,
                f"Pipeline {pipeline_name!r} is invalid: " + "; ".join(map(str, problems)),
            )
            return None
        return pipeline.spec

    # admission: maxConcurrentRuns ----------------------------------------------------------
    async def _admit(
        self,
        run: PipelineRun,
        body: Body,
        spec: PipelineSpec,
        pipeline: str,
        previous: PipelineRunStatus,
    ) -> bool:
        if spec.max_concurrent_runs is None:
            return True
        namespace = run.metadata.namespace or "default"
        async with self.admission[(namespace, pipeline)]:
            runs = [
                r
                for r in await self.kube.list(PIPELINERUNS, namespace)
                if (r.get("spec", {}).get("pipelineRef") or {}).get("name") == pipeline
            ]
            active = [r for r in runs if (r.get("status") or {}).get("phase") == RunPhase.RUNNING]
            waiting = sorted(
                (
                    r
                    for r in runs
                    if (r.get("status") or {}).get("phase", "Pending") == "Pending"
                    and not r.get("spec", {}).get("cancelled")
                ),
                key=lambda r: (r["metadata"].get("creationTimestamp") or "", r["metadata"]["name"]),
            )
            free = spec.max_concurrent_runs - len(active)
            mine = (
                [r["metadata"]["name"] for r in waiting].index(run.metadata.name)
                if any(r["metadata"]["name"] == run.metadata.name for r in waiting)
                else 0
            )
            metrics.QUEUE_DEPTH.labels(namespace=namespace, pipeline=pipeline).set(
                max(0, len(waiting) - max(free, 0))
            )
            if mine < free:
                # Mark it Running while holding the admission lock, so a concurrent
                # reconcile of another run counts it.
                status = previous.model_copy(deep=True)
                status.phase = RunPhase.RUNNING
                status.start_time = status.start_time or self.clock()
                await self._write_status(body, previous, status)
                previous.phase, previous.start_time = status.phase, status.start_time
                return True
            await self._waiting(
                body,
                previous,
                run,
                Reason.QUEUED,
                f"waiting: {len(active)} of at most {spec.max_concurrent_runs} "
                f"runs of {pipeline!r} are running; {mine - free + 1} ahead",
            )
            return False

    # the main step -------------------------------------------------------------------------
    async def _advance(
        self,
        run: PipelineRun,
        body: Body,
        spec: PipelineSpec,
        ctx: RunContext,
        owner: Owner,
        previous: PipelineRunStatus,
        s3: Any,
    ) -> Outcome:
        namespace = owner.namespace
        jobs = {  # never a Job of an earlier run object of the same name
            j["metadata"]["name"]: j
            for j in await self.kube.list(JOBS, namespace, job_selector(owner))
            if (controller_of(j, "PipelineRun") or {}).get("uid") == owner.uid
        }
        stages, results = await self._observe(ctx, spec, jobs, previous, run)
        now = self.clock()
        events: list[tuple[str, str]] = []
        status = previous
        blocked: set[str] = set()  # stages whose Job's name is still taken
        for _ in range(len(spec.stages) + 1):
            facts = RunFacts(
                stages=dict(stages),
                now=now,
                start_time=previous.start_time or now,
                cancelled=run.spec.cancelled,
                timeout_seconds=run.spec.timeout_seconds,
                generation=run.metadata.generation,
            )
            plan = plan_run(spec, facts, status)
            events += plan.events
            status = plan.status
            for name in plan.stop:
                await self.kube.delete(JOBS, namespace, job_name(owner.name, name))
            start = [name for name in plan.start if name not in blocked]
            if not start:
                break
            for name in start:
                stages[name] = await self._start(ctx, spec, name, stages, results, owner, s3, now)
                if stages[name].phase == StagePhase.PENDING:
                    blocked.add(name)
        status.pipeline_spec = spec
        if plan.finished:
            await self._finish(ctx, status, results, run)
        await self._write_status(body, previous, status)
        for reason, message in events:
            await self._event(body, reason, message)
        if plan.finished:
            metrics.RUNS_FINISHED.labels(phase=status.phase).inc()
            return Outcome(finished=True, pipeline=ctx.pipeline)
        requeue = self.settings.resync_seconds
        if run.spec.timeout_seconds and status.start_time:
            left = run.spec.timeout_seconds - (now - status.start_time).total_seconds()
            requeue = max(0.05, min(requeue, left + 0.05))
        return Outcome(finished=False, requeue=requeue)

    async def _observe(
        self,
        ctx: RunContext,
        spec: PipelineSpec,
        jobs: dict[str, Body],
        previous: PipelineRunStatus,
        run: PipelineRun,
    ) -> tuple[dict[str, StageStatus], dict[str, StageResult]]:
        facts: dict[str, JobFacts] = {}
        for stage in spec.stages:
            job = jobs.get(job_name(ctx.run, stage.name))
            if job is None:
                continue
            failed = any(
                c.get("type") == "Failed" and c.get("status") == "True"
                for c in (job.get("status") or {}).get("conditions") or []
            )
            pods = (
                await self.kube.list(
                    PODS,
                    ctx.namespace,
                    {"job-name": job["metadata"]["name"], RUN_UID_LABEL: run.metadata.uid or ""},
                )
                if failed
                else []
            )
            facts[stage.name] = observe_job(job, pods, stage.timeout_seconds)
        resume = run.spec.resume_from.run if run.spec.resume_from else None
        # The store is read in one go, off the event loop.
        return await _io(observe_store, ctx, spec, facts, previous, resume)

    async def _start(
        self,
        ctx: RunContext,
        spec: PipelineSpec,
        name: str,
        stages: dict[str, StageStatus],
        results: dict[str, StageResult],
        owner: Owner,
        s3: Any,
        now: datetime,
    ) -> StageStatus:
        stage = spec.stage(name)
        inv = await _io(ctx.invocation, stage, results)
        hit = await _io(ctx.cache_hit, stage, inv)
        if hit is not None:
            hit = hit.model_copy(update={"reused_from": "cache"})
            await _io(layout.commit_result, ctx.store, ctx.prefix(name), hit)
            results[name] = hit
            return succeeded(
                StageStatus(name=name, phase=StagePhase.SUCCEEDED, start_time=now, finish_time=now),
                hit,
            )
        job = desired_job(owner, ctx.pipeline, stage, inv, s3, self.settings)
        if not await self.kube.create(JOBS, owner.namespace, job):  # 409: whose is it?
            found = await self.kube.get(JOBS, owner.namespace, job["metadata"]["name"])
            return name_taken(found, owner, name, now, inv.cache_key)
        metrics.JOBS_CREATED.inc()
        finished = [t for d in stage.depends_on if (t := stages[d].finish_time) is not None]
        ready_since = max(finished, default=None)
        if ready_since is not None:
            metrics.HANDOFF_SECONDS.observe(max(0.0, (self.clock() - ready_since).total_seconds()))
        return StageStatus(
            name=name, phase=StagePhase.RUNNING, attempts=1, start_time=now, cache_key=inv.cache_key
        )

    async def _finish(
        self,
        ctx: RunContext,
        status: PipelineRunStatus,
        results: dict[str, StageResult],
        run: PipelineRun,
    ) -> None:
        status.model = await _io(ctx.model_record, results)
        if status.model is not None:
            status.model.metrics, _ = finite_metrics(status.model.metrics)  # the stage's says why
            status.metrics = dict(status.model.metrics)
        resume = run.spec.resume_from.run if run.spec.resume_from else None
        await _io(ctx.write_record, status, results, status.start_time or self.clock(), resume)
        status.run_record = ctx.store.uri(
            f"{layout.run_prefix(ctx.namespace, ctx.pipeline, ctx.run)}/run.json"
        )

    # status and events ---------------------------------------------------------------------
    async def _write_status(self, body: Body, previous: PipelineRunStatus, status: PipelineRunStatus) -> None:
        if status.model_dump() == previous.model_dump():
            return
        patch = status_patch(body.get("status"), status)
        meta = body["metadata"]
        await self.kube.patch(PIPELINERUNS, meta.get("namespace"), meta["name"], patch, sub="status")

    async def _waiting(
        self,
        body: Body,
        previous: PipelineRunStatus,
        run: PipelineRun,
        reason: Reason,
        message: str,
    ) -> None:
        status = previous.model_copy(deep=True)
        status.phase = RunPhase.PENDING
        status.observed_generation = run.metadata.generation
        cond = Condition(
            type="Succeeded",
            status="Unknown",
            reason=reason,
            message=message,
            observed_generation=run.metadata.generation,
        )
        before = next((c for c in previous.conditions if c.type == "Succeeded"), None)
        status.conditions = set_condition(status.conditions, cond, self.clock())
        await self._write_status(body, previous, status)
        if before is None or before.reason != reason:
            await self._event(body, reason, message)

    async def _fail_invalid(
        self, body: Body, previous: PipelineRunStatus, run: PipelineRun, message: str
    ) -> None:
        status = previous.model_copy(deep=True)
        now = self.clock()
        status.phase = RunPhase.FAILED
        status.completion_time = now
        cond = Condition(
            type="Succeeded",
            status="False",
            reason=Reason.INVALID_SPEC,
            message=message,
            observed_generation=run.metadata.generation,
        )
        status.conditions = set_condition(status.conditions, cond, now)
        await self._write_status(body, previous, status)
        await self._event(body, Reason.INVALID_SPEC, message)

    async def _event(self, body: Body, reason: str, message: str) -> None:
        warning = reason in (
            Reason.STAGE_FAILED,
            Reason.TIMED_OUT,
            Reason.INVALID_SPEC,
            Reason.PIPELINE_NOT_FOUND,
        )
        now = self.clock()
        await self.kube.post_event(body, "Warning" if warning else "Normal", reason, message, now)
