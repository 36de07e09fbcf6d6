"""Reconciling a ModelDeployment: serve the model (a URI, or a pipeline's champion) as a
Deployment + Service, follow new champions, keep the last good model when a new one never
becomes ready, watch drift and start a retraining PipelineRun when it stays over threshold."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from conveyor.api.common import Condition, Reason, S3Store
from conveyor.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from conveyor.api.pipeline import Pipeline
from conveyor.artifacts import layout
from conveyor.engine.conditions import set_condition
from conveyor.engine.names import child_name, label_value
from conveyor.engine.patches import status_patch
from conveyor.engine.rollout import ModelRef, Rollout, RolloutPlan, plan_rollout, read_rollout
from conveyor.engine.validation import InvalidResource, pydantic_problems
from conveyor.kube.client import (
    DEPLOYMENTS,
    MODELDEPLOYMENTS,
    PIPELINERUNS,
    PIPELINES,
    PROMETHEUSRULES,
    SERVICEMONITORS,
    SERVICES,
    Body,
    KubeClient,
)
from conveyor.kube.drift import DriftReader, PodDrift
from conveyor.kube.manifests import (
    MODEL_ANNOTATION,
    SERVE_PORT,
    Owner,
    desired_deployment,
    desired_prometheus_rule,
    desired_service,
    desired_service_monitor,
    desired_triggered_run,
    model_server_name,
)
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver

DURATION = re.compile(r"^(\d+)(s|m|h)$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def seconds(text: str) -> float:
    match = DURATION.match(text)
    assert match, text
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


class DeploymentReconciler:
    def __init__(
        self,
        kube: KubeClient,
        settings: Settings,
        stores: StoreResolver,
        drift: DriftReader | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.kube, self.settings, self.stores, self.clock = kube, settings, stores, clock
        self.read_drift = drift or PodDrift(kube)
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def reconcile(self, namespace: str, name: str) -> None:
        lock = self.locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            await self._reconcile(namespace, name)

    async def _reconcile(self, namespace: str, name: str) -> None:
        body = await self.kube.get(MODELDEPLOYMENTS, namespace, name)
        if body is None:
            return
        previous = ModelDeploymentStatus.model_validate(body.get("status") or {})
        status = previous.model_copy(deep=True)
        status.observed_generation = body["metadata"].get("generation")
        now = self.clock()
        try:
            md = ModelDeployment.model_validate(body)
        except ValidationError as err:
            message = "; ".join(map(str, pydantic_problems(err, "")))
            self._set(status, "Ready", "False", Reason.INVALID_SPEC, message, now)
            return await self._write(body, previous, status)
        owner = Owner("ModelDeployment", name, body["metadata"].get("uid", ""), namespace)
        try:
            target, s3 = await self._target(md, namespace)
        except InvalidResource as err:
            self._set(
                status, "Ready", "False", Reason.MODEL_NOT_FOUND, "; ".join(map(str, err.problems)), now
            )
            return await self._write(body, previous, status)
        server = model_server_name(name)
        current = await self.kube.get(DEPLOYMENTS, namespace, server)
        rollout = read_rollout(current, MODEL_ANNOTATION) if current is not None else None
        plan = plan_rollout(target, rollout, md.spec.replicas, _last_good(status), status.failed_model_sha256)
        if plan.update:
            desired = desired_deployment(owner, md.spec, plan.serve.uri, plan.serve.sha256, s3, self.settings)
            if current is None:
                await self.kube.create(DEPLOYMENTS, namespace, desired)
            else:
                await self.kube.patch(DEPLOYMENTS, namespace, server, {"spec": desired["spec"]})
        if await self.kube.get(SERVICES, namespace, server) is None:
            await self.kube.create(SERVICES, namespace, desired_service(owner))
        await self._monitoring(md, owner)
        self._observe(status, plan, rollout, md.spec.replicas, now, f"{server}.{namespace}")
        if status.conditions and _cond(status, "Ready") == "True":
            await self._drift(md, body, status, now)
        await self._write(body, previous, status)

    async def _target(self, md: ModelDeployment, namespace: str) -> tuple[ModelRef, S3Store]:
        source = md.spec.model
        if source.uri is not None:
            digest = hashlib.sha256(source.uri.encode()).hexdigest()  # the server checks the file's own
            parts = source.uri.rstrip("/").split("/")
            version = parts[-3] if len(parts) >= 3 else "model"
            return ModelRef(source.uri, digest, version), self.stores.spec_for_uri(source.uri)
        raw = await self.kube.get(PIPELINES, namespace, source.from_pipeline or "")
        if raw is None:
            from conveyor.engine.validation import Problem

            raise InvalidResource(
                [
                    Problem(
                        "spec.model.fromPipeline",
                        f"no Pipeline {source.from_pipeline!r}",
                        "create it, or serve a model by uri",
                    )
                ]
            )
        spec = Pipeline.model_validate(raw).spec
        store, s3 = self.stores.for_pipeline(spec)
        champion = await asyncio.to_thread(layout.read_champion, store, namespace, source.from_pipeline or "")
        if champion is None:
            from conveyor.engine.validation import Problem

            raise InvalidResource(
                [
                    Problem(
                        "spec.model.fromPipeline",
                        f"pipeline {source.from_pipeline!r} has no promoted model yet",
                        "run it until a model passes its gate",
                    )
                ]
            )
        return ModelRef(champion.model.uri, champion.model.sha256, champion.run), s3

    async def _monitoring(self, md: ModelDeployment, owner: Owner) -> None:
        """A ServiceMonitor and a PrometheusRule where the Prometheus Operator is installed."""
        if not await self.kube.serves(SERVICEMONITORS):
            return
        await self.kube.create(SERVICEMONITORS, owner.namespace, desired_service_monitor(owner))
        drift = md.spec.monitoring.drift if md.spec.monitoring else None
        if drift is not None and await self.kube.serves(PROMETHEUSRULES):
            model = md.spec.model.from_pipeline or owner.name
            rule = desired_prometheus_rule(owner, model, drift.threshold, drift.for_)
            if not await self.kube.create(PROMETHEUSRULES, owner.namespace, rule):
                name = rule["metadata"]["name"]
                await self.kube.patch(PROMETHEUSRULES, owner.namespace, name, {"spec": rule["spec"]})

    def _observe(
        self,
        status: ModelDeploymentStatus,
        plan: RolloutPlan,
        rollout: Rollout | None,
        replicas: int,
        now: datetime,
        host: str,
    ) -> None:
        """The status from the rollout plan: a model is recorded as serving (and last good)
        only once its own rollout is complete."""
        ready = rollout.ready if rollout is not None else 0
        available = rollout is not None and rollout.available
        status.ready_replicas = ready
        status.endpoint = f"http://{host}.svc:{SERVE_PORT}"
        self._set(
            status,
            "Available",
            "True" if available else "False",
            Reason.AVAILABLE if available else Reason.PENDING,
            f"{ready}/{replicas} replicas ready",
            now,
        )
        if plan.good is not None:
            status.model_uri, status.model_version = plan.good.uri, plan.good.version
            status.last_good_model, status.last_good_sha256 = plan.good.uri, plan.good.sha256
        status.failed_model_sha256 = plan.failed_sha256
        for type_, cond in (("Progressing", plan.progressing), ("Ready", plan.ready)):
            self._set(status, type_, cond.status, cond.reason, cond.message, now)

    async def _drift(
        self, md: ModelDeployment, body: Body, status: ModelDeploymentStatus, now: datetime
    ) -> None:
        drift = md.spec.monitoring.drift if md.spec.monitoring else None
        if drift is None:
            return
        meta = body["metadata"]
        score = await self.read_drift(meta["namespace"], meta["name"])
        if score is not None and not math.isfinite(score):
            status.last_drift_score = None  # NaN or infinity is no measurement: null, not acted on
            return
        if score is None:
            return
        status.last_drift_score = round(score, 4)
        if score <= drift.threshold:
            status.drift_since = None
            return
        status.drift_since = status.drift_since or now
        if (now - status.drift_since).total_seconds() < seconds(drift.for_) or md.spec.retrain is None:
            return
        retrain = md.spec.retrain
        if status.last_retrain_time and (now - status.last_retrain_time).total_seconds() < seconds(
            retrain.cooldown
        ):
            return
        recent = [
            r
            for r in await self.kube.list(
                PIPELINERUNS, meta["namespace"], {"conveyor.dev/modeldeployment": label_value(meta["name"])}
            )
            if _created(r) > now - timedelta(days=1)
        ]
        if len(recent) >= retrain.max_runs_per_day:
            status.last_retrain_reason = (
                f"drift {score:.3f} > {drift.threshold}, but {len(recent)} retraining "
                f"runs in the last 24h reached maxRunsPerDay"
            )
            return
        run_name = child_name(meta["name"], "retrain-" + now.strftime("%Y%m%d%H%M%S"))
        why = f"drift {score:.3f} > {drift.threshold} ({drift.method}) for {drift.for_}"
        run = desired_triggered_run(
            run_name,
            meta["namespace"],
            retrain.pipeline_ref,
            "drift",
            retrain.params,
            deployment=meta["name"],
            reason=why,
        )
        await self.kube.create(PIPELINERUNS, meta["namespace"], run)
        status.last_retrain_run, status.last_retrain_time, status.last_retrain_reason = run_name, now, why
        status.drift_since = None
        await self.kube.post_event(
            body,
            "Normal",
            Reason.DRIFT_DETECTED,
            f"{why}: started {run_name}",
            now,
        )

    def _set(
        self, status: ModelDeploymentStatus, type_: str, value: str, reason: str, message: str, now: datetime
    ) -> None:
        cond = Condition(
            type=type_,
            status=value,
            reason=reason,
            message=message,
            observed_generation=status.observed_generation,
        )
        status.conditions = set_condition(status.conditions, cond, now)

    async def _write(
        self, body: Body, previous: ModelDeploymentStatus, status: ModelDeploymentStatus
    ) -> None:
        if status.model_dump() == previous.model_dump():
            return
        meta = body["metadata"]
        patch = status_patch(body.get("status"), status)
        await self.kube.patch(MODELDEPLOYMENTS, meta["namespace"], meta["name"], patch, sub="status")
        before = {c.type: c.status for c in previous.conditions}
        for cond in status.conditions:
            if before.get(cond.type) != cond.status and cond.type == "Ready":
                now = self.clock()
                await self.kube.post_event(
                    body,
                    "Normal" if cond.status == "True" else "Warning",
                    cond.reason,
                    cond.message,
                    now,
                )


def _cond(status: ModelDeploymentStatus, type_: str) -> str | None:
    return next((c.status for c in status.conditions if c.type == type_), None)


def _last_good(status: ModelDeploymentStatus) -> ModelRef | None:
    if status.last_good_model is None or status.last_good_sha256 is None:
        return None
    return ModelRef(status.last_good_model, status.last_good_sha256, status.model_version or "")


def _created(run: Body) -> datetime:
    stamp = run.get("metadata", {}).get("creationTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else datetime.min.replace(tzinfo=UTC)
