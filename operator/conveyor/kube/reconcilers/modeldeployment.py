"""Reconciling a ModelDeployment, as glue: get it, observe (the model to serve, the Deployment,
the Service; drift, live quality and the recent retraining runs only when the plan asks for
them), plan (`engine.modeldeployments.plan_model_deployment`, where the rollout, rollback,
drift, live-quality and retraining policy lives), apply, write the status, post the events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from conveyor.api.common import Reason, S3Store
from conveyor.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from conveyor.api.pipeline import Pipeline
from conveyor.artifacts import layout
from conveyor.artifacts.champion import read_version
from conveyor.contract import DEPLOYMENT_LABEL, MODEL_ANNOTATION
from conveyor.engine.credentials import serving_secret
from conveyor.engine.modeldeployments import (
    UNOBSERVED,
    DeploymentFacts,
    DeploymentPlan,
    InvalidSpec,
    Need,
    NoModel,
    Quality,
    parse_spec,
    plan_model_deployment,
    recent_retrains,
    uri_target,
)
from conveyor.engine.names import label_value
from conveyor.engine.patches import status_patch
from conveyor.engine.rollout import ModelRef, read_rollout
from conveyor.engine.validation import InvalidResource, Problem
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
from conveyor.kube.drift import DriftReader, drift_reader
from conveyor.kube.manifests import (
    SERVE_PORT,
    Owner,
    desired_deployment,
    desired_prometheus_rule,
    desired_service,
    desired_service_monitor,
    desired_triggered_run,
    model_server_name,
    secrets_of,
)
from conveyor.kube.quality import QualityReader, quality_reader
from conveyor.kube.reconcilers.secrets import check_secrets
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver


def utcnow() -> datetime:
    return datetime.now(UTC)


class ModelDeploymentReconciler:
    def __init__(
        self,
        kube: KubeClient,
        settings: Settings,
        stores: StoreResolver,
        drift: DriftReader | None = None,
        clock: Callable[[], datetime] = utcnow,
        quality: QualityReader | None = None,
    ) -> None:
        self.kube, self.settings, self.stores, self.clock = kube, settings, stores, clock
        self.read_drift = drift or drift_reader(kube, settings)
        self.read_quality = quality or quality_reader(kube, settings)

    async def reconcile(self, namespace: str, name: str) -> None:
        """One pass. Not re-entrant per object: the controller's per-key queue runs one
        reconcile of an object at a time."""
        body = await self.kube.get(MODELDEPLOYMENTS, namespace, name)
        if body is None:
            return
        now = self.clock()
        spec = parse_spec(body)
        previous = ModelDeploymentStatus.model_validate(body.get("status") or {})
        generation = body["metadata"].get("generation")
        facts, s3 = await self._observe(spec, namespace, name)

        def plan(facts: DeploymentFacts) -> DeploymentPlan:
            return plan_model_deployment(name, spec, facts, previous, now, generation)

        planned = plan(facts)
        if planned.needs is Need.DRIFT:
            facts = replace(facts, drift=await self.read_drift(namespace, name))
            planned = plan(facts)
        if planned.needs is Need.QUALITY:
            facts = replace(facts, quality=await self._quality(spec, namespace, name))
            planned = plan(facts)
        if planned.needs is Need.RECENT_RETRAINS:
            facts = replace(facts, recent_retrains=await self._recent_retrains(namespace, name, now))
            planned = plan(facts)
        if isinstance(spec, ModelDeploymentSpec):
            await self._apply(body, spec, planned, s3)
        await self._write(body, planned, now)

    async def _observe(
        self, spec: ModelDeploymentSpec | InvalidSpec, namespace: str, name: str
    ) -> tuple[DeploymentFacts, S3Store | None]:
        """The model to serve and, when there is one, the Deployment and the Service."""
        if isinstance(spec, InvalidSpec):
            return UNOBSERVED, None
        try:
            target, s3 = await self._target(spec, namespace)
        except InvalidResource as err:
            return DeploymentFacts(NoModel("; ".join(map(str, err.problems)))), None
        try:  # model servers get the store's read-only Secret, and only one that opted in
            await check_secrets(self.kube, namespace, serving_secret(secrets_of(s3, self.settings)))
        except InvalidResource as err:
            why = NoModel("; ".join(map(str, err.problems)), Reason.CREDENTIALS_NOT_ALLOWED)
            return DeploymentFacts(why), None
        server = model_server_name(name)
        current = await self.kube.get(DEPLOYMENTS, namespace, server)
        facts = DeploymentFacts(
            target,
            rollout=read_rollout(current, MODEL_ANNOTATION) if current is not None else None,
            service=await self.kube.get(SERVICES, namespace, server) is not None,
            endpoint=f"http://{server}.{namespace}.svc:{SERVE_PORT}",
        )
        return facts, s3

    async def _target(self, spec: ModelDeploymentSpec, namespace: str) -> tuple[ModelRef, S3Store]:
        """The model the spec names, and its store; InvalidResource when there is none."""
        source = spec.model
        if source.uri is not None:
            target = uri_target(source.uri, layout.model_version(source.uri))
            return target, self.stores.spec_for_uri(source.uri)
        pipeline = source.from_pipeline or ""
        raw = await self.kube.get(PIPELINES, namespace, pipeline)
        if raw is None:
            problem = Problem(
                "spec.model.fromPipeline", f"no Pipeline {pipeline!r}", "create it, or serve a model by uri"
            )
            raise InvalidResource([problem])
        store, s3 = self.stores.for_pipeline(Pipeline.model_validate(raw).spec)
        if source.version is not None:  # pinned: that version, whatever the champion is now
            pinned = await asyncio.to_thread(read_version, store, namespace, pipeline, source.version)
            if pinned is None:
                problem = Problem(
                    "spec.model.version",
                    f"pipeline {pipeline!r} has no model version {source.version}",
                    f"pick one `conveyor models {pipeline}` lists, or remove version to follow the champion",
                )
                raise InvalidResource([problem])
            return ModelRef(pinned.model.uri, pinned.model.sha256, pinned.run), s3
        try:
            champion = await asyncio.to_thread(layout.read_champion, store, namespace, pipeline)
        except layout.CorruptRecord as err:  # the status says which file and how to repair it
            raise InvalidResource(
                [Problem("spec.model.fromPipeline", str(err), "repair the store")]
            ) from None
        if champion is None:
            problem = Problem(
                "spec.model.fromPipeline",
                f"pipeline {pipeline!r} has no promoted model yet",
                "run it until a model passes its gate",
            )
            raise InvalidResource([problem])
        return ModelRef(champion.model.uri, champion.model.sha256, champion.run), s3

    async def _quality(
        self, spec: ModelDeploymentSpec | InvalidSpec, namespace: str, name: str
    ) -> Quality | None:
        """The live metric `spec.monitoring.performance` names, as the model server reports it."""
        monitoring = spec.monitoring if isinstance(spec, ModelDeploymentSpec) else None
        if monitoring is None or monitoring.performance is None:
            return None
        return await self.read_quality(namespace, name, monitoring.performance.metric)

    async def _recent_retrains(self, namespace: str, name: str, now: datetime) -> int:
        runs = await self.kube.list(PIPELINERUNS, namespace, {DEPLOYMENT_LABEL: label_value(name)})
        return recent_retrains((r.get("metadata", {}).get("creationTimestamp") for r in runs), now)

    async def _apply(
        self, body: Body, spec: ModelDeploymentSpec, plan: DeploymentPlan, s3: S3Store | None
    ) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        owner = Owner("ModelDeployment", name, meta.get("uid", ""), namespace)
        if plan.deployment is not None:
            model = plan.deployment.model
            desired = desired_deployment(owner, spec, model.uri, model.sha256, s3, self.settings)
            if plan.deployment.create:
                await self.kube.create(DEPLOYMENTS, namespace, desired)
            else:
                server = model_server_name(name)
                await self.kube.patch(DEPLOYMENTS, namespace, server, {"spec": desired["spec"]})
        if plan.create_service:
            await self.kube.create(SERVICES, namespace, desired_service(owner))
        if plan.ensure_monitoring:
            await self._monitoring(spec, owner)
        if plan.retrain is not None and spec.retrain is not None:
            run = desired_triggered_run(
                plan.retrain.name,
                namespace,
                spec.retrain.pipeline_ref,
                plan.retrain.trigger,
                spec.retrain.params,
                deployment=name,
                reason=plan.retrain.reason,
            )
            await self.kube.create(PIPELINERUNS, namespace, run)

    async def _monitoring(self, spec: ModelDeploymentSpec, owner: Owner) -> None:
        """A ServiceMonitor and a PrometheusRule where the Prometheus Operator is installed."""
        if not await self.kube.serves(SERVICEMONITORS):
            return
        await self.kube.create(SERVICEMONITORS, owner.namespace, desired_service_monitor(owner))
        drift = spec.monitoring.drift if spec.monitoring else None
        if drift is not None and await self.kube.serves(PROMETHEUSRULES):
            model = spec.model.from_pipeline or owner.name
            rule = desired_prometheus_rule(owner, model, drift.threshold, drift.for_)
            if not await self.kube.create(PROMETHEUSRULES, owner.namespace, rule):
                name = rule["metadata"]["name"]
                await self.kube.patch(PROMETHEUSRULES, owner.namespace, name, {"spec": rule["spec"]})

    async def _write(self, body: Body, plan: DeploymentPlan, now: datetime) -> None:
        """The status, when it changed, then the events."""
        meta = body["metadata"]
        if plan.changed:
            patch = status_patch(body.get("status"), plan.status)
            await self.kube.patch(MODELDEPLOYMENTS, meta["namespace"], meta["name"], patch, sub="status")
        for event in plan.events:
            await self.kube.post_event(body, event.type, event.reason, event.message, now)
