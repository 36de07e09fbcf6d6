"""Reconciling a PipelineRun: get → (its Pipeline, admission) → `runs.advance` over Jobs →
write status → events; after a run whose model awaits approval: its `spec.approval` applied
(`runs.approval`) and the AwaitingApproval condition. Idempotent: every fact comes from the
world (the run object, its Jobs, the store), never from memory, so a reconcile can run again
at any time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from conveyor.api.common import Reason, S3Store
from conveyor.api.pipeline import Pipeline, PipelineSpec
from conveyor.api.pipelinerun import (
    FINISHED_RUN_PHASES,
    PipelineRun,
    PipelineRunStatus,
    RunPhase,
)
from conveyor.artifacts.layout import StageResult, read_run_record
from conveyor.artifacts.store import Store
from conveyor.contract import TRIGGER_LABEL
from conveyor.engine.admission import RunSummary, admit
from conveyor.engine.patches import status_patch
from conveyor.engine.planner import RunPlan, admitted, plan_approval, refused, waiting
from conveyor.engine.validation import InvalidResource, Problem, check_pipeline_spec
from conveyor.kube import metrics
from conveyor.kube.client import PIPELINERUNS, PIPELINES, Body, KubeClient
from conveyor.kube.launcher import JobLauncher
from conveyor.kube.manifests import Owner, secrets_of
from conveyor.kube.reconcilers.secrets import check_secrets
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver
from conveyor.runs.advance import RunInputs, advance
from conveyor.runs.approval import approve, reject
from conveyor.runs.context import RunContext, runtime_version

Clock = Callable[[], datetime]
WARNINGS = {
    Reason.STAGE_FAILED,
    Reason.TIMED_OUT,
    Reason.INVALID_SPEC,
    Reason.PIPELINE_NOT_FOUND,
    Reason.CREDENTIALS_NOT_ALLOWED,
}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Outcome:
    """What the caller should do next: nothing (finished), or look again after `requeue`."""

    finished: bool
    requeue: float | None = None
    pipeline: str | None = None  # set when the run finished in this reconcile: follow-ups are due


class PipelineRunReconciler:
    def __init__(
        self, kube: KubeClient, settings: Settings, stores: StoreResolver, clock: Clock = utcnow
    ) -> None:
        self.kube, self.settings, self.stores, self.clock = kube, settings, stores, clock
        self.version = runtime_version(settings.image)
        self.admission = asyncio.Lock()  # one admission at a time: each counts the others' runs
        # per run (namespace, name): its UID and the stage results already read from the store
        self.known: dict[tuple[str, str], tuple[str, dict[str, StageResult]]] = {}

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        started = time.perf_counter()
        try:
            outcome = await self._reconcile(namespace, name)
        except Exception:
            metrics.RECONCILE_ERRORS.labels(kind="PipelineRun").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.labels(kind="PipelineRun").observe(time.perf_counter() - started)
        if outcome.finished:
            self.known.pop((namespace, name), None)
        return outcome

    async def _reconcile(self, namespace: str, name: str) -> Outcome:
        body = await self.kube.get(PIPELINERUNS, namespace, name)
        if body is None:
            return Outcome(finished=True)
        run = PipelineRun.model_validate(body)
        previous = run.status or PipelineRunStatus()
        pipeline = run.spec.pipeline_ref.name if run.spec.pipeline_ref else name
        if previous.phase in FINISHED_RUN_PHASES:
            return await self._decided(body, run, previous, pipeline)
        spec = previous.pipeline_spec or run.spec.pipeline_spec or await self._pipeline(body, run, pipeline)
        if spec is None:
            return Outcome(finished=False, requeue=self.settings.resync_seconds)
        try:
            store, s3 = self.stores.for_pipeline(spec)
            uid = run.metadata.uid or ""
            ctx = RunContext(
                spec, pipeline, namespace, name, store, run.spec.params,
                version=self.version, known=self._known(namespace, name, uid),
                trigger=(run.metadata.labels or {}).get(TRIGGER_LABEL, "manual"),
            )  # fmt: skip
            if previous.phase == RunPhase.PENDING and run.spec.resume_from:
                await self._check_resume(run.spec.resume_from.run, store, namespace, pipeline)
        except InvalidResource as err:
            message = "; ".join(map(str, err.problems))
            await self._write(body, refused(previous, message, run.metadata.generation, self.clock()))
            return Outcome(finished=True)
        if previous.phase == RunPhase.PENDING and not run.spec.cancelled:
            if not await self._secrets_allowed(body, run, s3):
                return Outcome(finished=False, requeue=self.settings.resync_seconds)
            slot = await self._admit(body, run, spec, pipeline)
            if slot is None:
                return Outcome(finished=False, requeue=self.settings.resync_seconds)
            previous, body = slot
        launcher = JobLauncher(self.kube, Owner("PipelineRun", name, uid, namespace), ctx, s3, self.settings)
        resume = run.spec.resume_from.run if run.spec.resume_from else None
        inputs = RunInputs(run.spec.cancelled, run.spec.timeout_seconds, run.metadata.generation, resume)
        step = await advance(
            ctx, launcher, previous.model_copy(update={"pipeline_spec": spec}), inputs, self.clock
        )
        for stage, seconds in step.stage_seconds.items():
            metrics.STAGE_SECONDS.labels(stage=stage).observe(seconds)
        for seconds in step.handoffs:
            metrics.HANDOFF_SECONDS.observe(seconds)
        if step.plan.finished:  # a model that awaits approval: decided now if spec.approval is set
            step.plan = await self._approval(run, step.plan, store, pipeline)
        await self._write(body, step.plan)
        if step.plan.finished:
            metrics.RUNS_FINISHED.labels(phase=step.status.phase).inc()
            return Outcome(finished=True, pipeline=pipeline)
        return Outcome(finished=False, requeue=self._requeue(run, step.status))

    @staticmethod
    async def _check_resume(resume: str, store: Store, namespace: str, pipeline: str) -> None:
        """A run to resume from must exist (its record in the store), or the run is refused."""
        if await asyncio.to_thread(read_run_record, store, namespace, pipeline, resume) is None:
            problem = Problem(
                "spec.resumeFrom.run",
                f"pipeline {pipeline!r} has no run {resume!r} in its store",
                "name an earlier run of this pipeline (kubectl get pipelineruns), or drop resumeFrom",
            )
            raise InvalidResource([problem])

    async def _decided(
        self, body: Body, run: PipelineRun, status: PipelineRunStatus, pipeline: str
    ) -> Outcome:
        """A finished run: its human's decision applied, when its model awaits one and its
        spec.approval is set (the ModelDeployments following the pipeline look again)."""
        waits = status.model is not None and status.model.approval == "Pending"
        if not (waits and run.spec.approval and status.pipeline_spec):
            return Outcome(finished=True)
        try:
            store, _ = self.stores.for_pipeline(status.pipeline_spec)
        except InvalidResource:
            return Outcome(finished=True)
        plan = await self._approval(run, RunPlan(status=status), store, pipeline)
        await self._write(body, plan)
        return Outcome(finished=True, pipeline=pipeline)

    async def _approval(self, run: PipelineRun, plan: RunPlan, store: Store, pipeline: str) -> RunPlan:
        """The plan with spec.approval applied to a Pending model (`runs.approval`: promote or
        record the rejection, once) and the AwaitingApproval condition and event."""
        status, decision = plan.status, run.spec.approval
        model = status.model
        if model is not None and model.approval == "Pending" and decision is not None:
            namespace, name = run.metadata.namespace or "default", run.metadata.name
            if decision.decision == "Approve":
                decided = await asyncio.to_thread(approve, store, namespace, pipeline, name, decision.by)
            else:
                decided = await asyncio.to_thread(
                    reject, store, namespace, pipeline, name, decision.by, decision.reason
                )
            status = status.model_copy(update={"model": decided.model})
        after = plan_approval(status, run.metadata.generation, self.clock())
        return RunPlan(plan.start, plan.stop, after.status, [*plan.events, *after.events])

    def _known(self, namespace: str, name: str, uid: str) -> dict[str, StageResult]:
        """The results this run's reconciles have read (a run re-created under the same name
        starts afresh)."""
        held = self.known.get((namespace, name))
        if held is None or held[0] != uid:
            held = self.known[(namespace, name)] = (uid, {})
        return held[1]

    def _requeue(self, run: PipelineRun, status: PipelineRunStatus) -> float:
        """The safety-net look, or sooner: when the run's timeout falls due."""
        requeue = self.settings.resync_seconds
        if run.spec.timeout_seconds and status.start_time:
            left = run.spec.timeout_seconds - (self.clock() - status.start_time).total_seconds()
            requeue = max(0.05, min(requeue, left + 0.05))
        return requeue

    async def _pipeline(self, body: Body, run: PipelineRun, name: str) -> PipelineSpec | None:
        """The referenced Pipeline's spec; None (and the run told why) while it is missing or invalid."""
        namespace = run.metadata.namespace or "default"
        raw = await self.kube.get(PIPELINES, namespace, name)
        if raw is None:
            reason = Reason.PIPELINE_NOT_FOUND
            message = (
                f"Pipeline {name!r} not found in namespace {namespace!r}; the run starts when it appears"
            )
        else:
            pipeline = Pipeline.model_validate(raw)
            problems = check_pipeline_spec(pipeline.spec, "spec")
            if not problems:
                return pipeline.spec
            reason = Reason.INVALID_SPEC
            message = f"Pipeline {name!r} is invalid: " + "; ".join(map(str, problems))
        previous = run.status or PipelineRunStatus()
        await self._write(body, waiting(previous, reason, message, run.metadata.generation, self.clock()))
        return None

    async def _secrets_allowed(self, body: Body, run: PipelineRun, s3: S3Store) -> bool:
        """Before its first Job: the Secret its stage pods would get has opted in; else the run
        waits, Pending, its status naming the Secret, the label and the fix (looked at again
        every resync: labelling the Secret starts it)."""
        namespace = run.metadata.namespace or "default"
        try:
            await check_secrets(self.kube, namespace, secrets_of(s3, self.settings).read_write)
        except InvalidResource as err:
            message = "; ".join(map(str, err.problems))
            previous = run.status or PipelineRunStatus()
            reason = Reason.CREDENTIALS_NOT_ALLOWED
            await self._write(body, waiting(previous, reason, message, run.metadata.generation, self.clock()))
            return False
        return True

    async def _admit(
        self, body: Body, run: PipelineRun, spec: PipelineSpec, pipeline: str
    ) -> tuple[PipelineRunStatus, Body] | None:
        """maxConcurrentRuns: the run's status and object as written when it got a slot, else
        None (queued)."""
        previous = run.status or PipelineRunStatus()
        if spec.max_concurrent_runs is None:
            return previous, body
        namespace = run.metadata.namespace or "default"
        async with self.admission:  # the Running status is written before another run counts
            runs = [RunSummary.from_body(r) for r in await self.kube.list(PIPELINERUNS, namespace)]
            decision = admit(run.metadata.name, runs, spec.max_concurrent_runs, pipeline)
            metrics.QUEUE_DEPTH.labels(namespace=namespace, pipeline=pipeline).set(decision.queue_depth)
            if not decision.admitted:
                plan = waiting(
                    previous, Reason.QUEUED, decision.message, run.metadata.generation, self.clock()
                )
                await self._write(body, plan)
                return None
            status = admitted(previous, self.clock())
            return status, await self._write(body, RunPlan(status=status))

    async def _write(self, body: Body, plan: RunPlan) -> Body:
        """The status, if it changed, then the events; the object as it is now. The merge patch
        is conditional on the object read: a run changed since (cancelled, say) is looked at
        again (a Conflict) rather than given a status planned without that change."""
        meta = body["metadata"]
        previous = PipelineRunStatus.model_validate(body.get("status") or {})
        if plan.status.model_dump() != previous.model_dump():
            patch = status_patch(body.get("status"), plan.status)
            written = await self.kube.patch(
                PIPELINERUNS, meta.get("namespace"), meta["name"], patch, sub="status",
                resource_version=meta.get("resourceVersion"),
            )  # fmt: skip
            body = written if written is not None else body
        for reason, message in plan.events:
            kind = "Warning" if reason in WARNINGS else "Normal"
            await self.kube.post_event(body, kind, reason, message, self.clock())
        return body
