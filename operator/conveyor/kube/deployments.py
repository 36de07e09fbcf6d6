"""Reconciling a ModelDeployment: serve the model (a URI, or a pipeline's champion) as a
Deployment + Service, follow new champions, keep the last good model when a new one never
becomes ready, watch drift and start a retraining PipelineRun when it stays over threshold."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from conveyor.api.common import Condition, Reason, S3Store
from conveyor.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from conveyor.api.pipeline import Pipeline
from conveyor.artifacts import layout
from conveyor.engine.conditions import set_condition
from conveyor.engine.names import child_name
from conveyor.engine.patches import status_patch
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
from conveyor.kube.manifests import (
    MODEL_ANNOTATION,
    SERVE_PORT,
    Owner,
    desired_deployment,
    desired_prometheus_rule,
    desired_service,
    desired_service_monitor,
    desired_triggered_run,
)
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver

DriftReader = Callable[[str, str], Awaitable[float | None]]
DURATION = re.compile(r"^(\d+)(s|m|h)$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def seconds(text: str) -> float:
    match = DURATION.match(text)
    assert match, text
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def drift_score(metrics_text: str) -> float | None:
    """The largest `conveyor_drift_score` in a Prometheus text exposition."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("conveyor_drift_score{")
    ]
    return max(values) if values else None


def prometheus_value(body: str) -> float | None:
    """The value of an instant-vector answer of Prometheus' HTTP API."""
    result = json.loads(body).get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


@dataclass
class Target:
    uri: str
    sha256: str
    version: str


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
        self.read_drift = drift or self._read_drift
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def _read_drift(self, namespace: str, name: str) -> float | None:
        text = await self.kube.get_text(
            self.settings.model_metrics_url.format(name=name, namespace=namespace)
        )
        return drift_score(text) if text else None

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
        current = await self.kube.get(DEPLOYMENTS, namespace, name)
        target = self._avoid_failed(target, current, status, now)
        desired = desired_deployment(owner, md.spec, target.uri, target.sha256, s3, self.settings)
        if current is None:
            await self.kube.create(DEPLOYMENTS, namespace, desired)
            current = desired
        elif _running_sha(current) != target.sha256 or current["spec"].get("replicas") != md.spec.replicas:
            patched = await self.kube.patch(DEPLOYMENTS, namespace, name, {"spec": desired["spec"]})
            current = patched or {**current, "spec": desired["spec"], "status": {}}
        if await self.kube.get(SERVICES, namespace, name) is None:
            await self.kube.create(SERVICES, namespace, desired_service(owner))
        await self._monitoring(md, owner)
        self._observe(status, current, target, md.spec.replicas, now, namespace, name)
        if status.conditions and _cond(status, "Ready") == "True":
            await self._drift(md, body, status, now)
        await self._write(body, previous, status)

    async def _target(self, md: ModelDeployment, namespace: str) -> tuple[Target, S3Store]:
        source = md.spec.model
        if source.uri is not None:
            digest = hashlib.sha256(source.uri.encode()).hexdigest()  # the server checks the file's own
            parts = source.uri.rstrip("/").split("/")
            version = parts[-3] if len(parts) >= 3 else "model"
            return Target(source.uri, digest, version), self.stores.spec_for_uri(source.uri)
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
        return Target(champion.model.uri, champion.model.sha256, champion.run), s3

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
                await self.kube.patch(PROMETHEUSRULES, owner.namespace, owner.name, {"spec": rule["spec"]})

    def _avoid_failed(
        self, target: Target, current: Body | None, status: ModelDeploymentStatus, now: datetime
    ) -> Target:
        """A model whose pods never became ready is not rolled out again; the last good one stays."""
        if current is not None and _running_sha(current) == target.sha256 and _rollout_failed(current):
            status.failed_model_sha256 = target.sha256
        if status.failed_model_sha256 == target.sha256 and status.last_good_model and status.last_good_sha256:
            self._set(
                status,
                "Progressing",
                "False",
                Reason.ROLLOUT_FAILED,
                f"model {target.uri} never became ready; serving the last good model "
                f"{status.last_good_model}",
                now,
            )
            return Target(status.last_good_model, status.last_good_sha256, status.model_version or "")
        return target

    def _observe(
        self,
        status: ModelDeploymentStatus,
        dep: Body,
        target: Target,
        replicas: int,
        now: datetime,
        namespace: str,
        name: str,
    ) -> None:
        st = dep.get("status") or {}
        ready = int(st.get("readyReplicas") or 0)
        updated = int(st.get("updatedReplicas") or 0)
        observed_current = st.get("observedGeneration") is not None and st.get(
            "observedGeneration"
        ) == dep.get("metadata", {}).get("generation")
        status.ready_replicas = ready
        status.endpoint = f"http://{name}.{namespace}.svc:{SERVE_PORT}"
        rolled = (
            observed_current
            and updated >= replicas
            and ready >= replicas
            and _running_sha(dep) == target.sha256
        )
        available = any(
            c.get("type") == "Available" and c.get("status") == "True" for c in st.get("conditions") or []
        )
        self._set(
            status,
            "Available",
            "True" if available else "False",
            Reason.AVAILABLE if available else Reason.PENDING,
            f"{ready}/{replicas} replicas ready",
            now,
        )
        # Serving the last good model instead of a failed one: Progressing keeps saying why.
        rolling_back = (
            status.failed_model_sha256 is not None
            and target.sha256 == status.last_good_sha256
            and status.failed_model_sha256 != target.sha256
        )
        if rolled:
            status.model_uri, status.model_version = target.uri, target.version
            status.last_good_model, status.last_good_sha256 = target.uri, target.sha256
            if not rolling_back:
                self._set(status, "Progressing", "False", Reason.SUCCEEDED, f"serving {target.uri}", now)
            self._set(
                status, "Ready", "True", Reason.AVAILABLE, f"serving {target.uri} on {ready} replica(s)", now
            )
        else:
            if not rolling_back:
                self._set(status, "Progressing", "True", Reason.ROLLING_OUT, f"rolling out {target.uri}", now)
            ready_now = "True" if status.model_uri and available else "False"
            self._set(status, "Ready", ready_now, Reason.ROLLING_OUT, f"rolling out {target.uri}", now)

    async def _drift(
        self, md: ModelDeployment, body: Body, status: ModelDeploymentStatus, now: datetime
    ) -> None:
        drift = md.spec.monitoring.drift if md.spec.monitoring else None
        if drift is None:
            return
        meta = body["metadata"]
        score = await self.read_drift(meta["namespace"], meta["name"])
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
                PIPELINERUNS, meta["namespace"], {"conveyor.dev/modeldeployment": meta["name"]}
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


def _running_sha(dep: Body) -> str | None:
    annotations = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    value = annotations.get(MODEL_ANNOTATION)
    return str(value) if value is not None else None


def _rollout_failed(dep: Body) -> bool:
    return any(
        c.get("type") == "Progressing"
        and c.get("status") == "False"
        and c.get("reason") == "ProgressDeadlineExceeded"
        for c in (dep.get("status") or {}).get("conditions") or []
    )


def _created(run: Body) -> datetime:
    stamp = run.get("metadata", {}).get("creationTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else datetime.min.replace(tzinfo=UTC)
