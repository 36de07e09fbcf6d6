"""The operator's launcher: a stage is a Job controlled by its PipelineRun.

What a stage is doing is what its Job says, and only a Job controlled by this very run object
(by UID) counts: a Job left by an earlier run object of the same name (deleted, created again)
is never taken as this run's. A Job retries its pod (`backoffLimit`) and ends an attempt at the
stage's timeout (the pod's `activeDeadlineSeconds`), as `runs.advance.Launcher` asks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conveyor.api.pipeline import Stage
from conveyor.api.pipelinerun import StagePhase, StageStatus
from conveyor.contract import RUN_UID_LABEL
from conveyor.engine.invocation import StageInvocation
from conveyor.kube import metrics
from conveyor.kube.client import JOBS, PODS, Body, KubeClient
from conveyor.kube.manifests import Owner, desired_job, job_name, job_selector
from conveyor.kube.observe import JobFacts, controller_of, job_condition, observe_job
from conveyor.kube.settings import Settings
from conveyor.runs.context import RunContext


class JobLauncher:
    def __init__(self, kube: KubeClient, owner: Owner, ctx: RunContext, s3: Any, settings: Settings) -> None:
        self.kube, self.owner, self.ctx, self.s3, self.settings = kube, owner, ctx, s3, settings

    async def observe(self) -> dict[str, StageStatus]:
        owner = self.owner
        jobs = {
            j["metadata"]["name"]: j
            for j in await self.kube.list(JOBS, owner.namespace, job_selector(owner))
            if (controller_of(j, "PipelineRun") or {}).get("uid") == owner.uid
        }
        stages: dict[str, StageStatus] = {}
        for stage in self.ctx.spec.stages:
            job = jobs.get(job_name(owner.name, stage.name))
            if job is not None:
                facts = observe_job(job, await self._pods_if_failed(job), stage.timeout_seconds)
                stages[stage.name] = _status(stage.name, facts)
        return stages

    async def _pods_if_failed(self, job: Body) -> list[Body]:
        """A failed Job's pods say why (termination message, deadline); a running one's don't matter."""
        if job_condition(job, "Failed") is None:
            return []
        labels = {"job-name": job["metadata"]["name"], RUN_UID_LABEL: self.owner.uid}
        return await self.kube.list(PODS, self.owner.namespace, labels)

    async def launch(self, stage: Stage, inv: StageInvocation, now: datetime) -> StageStatus:
        job = desired_job(self.owner, self.ctx.pipeline, stage, inv, self.s3, self.settings)
        if not await self.kube.create(JOBS, self.owner.namespace, job):  # 409: whose is it?
            found = await self.kube.get(JOBS, self.owner.namespace, job["metadata"]["name"])
            return name_taken(found, self.owner, stage.name, now, inv.cache_key)
        metrics.JOBS_CREATED.inc()
        return StageStatus(
            name=stage.name, phase=StagePhase.RUNNING, attempts=1, start_time=now, cache_key=inv.cache_key
        )

    async def stop(self, stage: str) -> None:
        await self.kube.delete(JOBS, self.owner.namespace, job_name(self.owner.name, stage))


def _status(name: str, facts: JobFacts) -> StageStatus:
    return StageStatus(
        name=name,
        phase=StagePhase(facts.phase),
        attempts=facts.attempts,
        start_time=facts.start_time,
        finish_time=facts.finish_time,
        message=facts.message,
        cache_key=facts.cache_key,
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
