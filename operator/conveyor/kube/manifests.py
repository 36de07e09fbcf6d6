"""Pure builders of the Kubernetes objects the operator creates (validated in tests against
the official schemas and the restricted Pod Security profile)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor.api.common import API_VERSION, S3Store
from conveyor.api.modeldeployment import ModelDeploymentSpec, Rollout
from conveyor.api.pipeline import Stage
from conveyor.engine.invocation import ENV_VAR, StageInvocation
from conveyor.engine.names import child_name, dns1035_label, label_value, standard_labels
from conveyor.engine.params import substitute
from conveyor.kube.settings import Settings

RUN_UID = 10001
TERMINATION_LOG = "/dev/termination-log"
CACHE_KEY_ANNOTATION = "conveyor.dev/cache-key"
RUN_LABEL = "conveyor.dev/pipelinerun"
RUN_UID_LABEL = "conveyor.dev/pipelinerun-uid"


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str
    uid: str
    namespace: str

    def reference(self) -> dict[str, Any]:
        # blockOwnerDeletion: a foreground deletion of the owner waits for its children. The
        # OwnerReferencesPermissionEnforcement admission plugin then asks for `update` on
        # <owner plural>/finalizers: pipelines (scheduled runs), pipelineruns (Jobs) and
        # modeldeployments (model servers); the chart's Role grants it.
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def job_name(run: str, stage: str) -> str:
    return child_name(run, stage)


def job_selector(owner: Owner) -> dict[str, str]:
    """The labels of this very run's Jobs and their pods: the run's UID tells them from those
    of an earlier run object of the same name that the garbage collector has not removed yet."""
    return {RUN_LABEL: label_value(owner.name), RUN_UID_LABEL: owner.uid}


def restricted_pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_UID,
        "runAsGroup": RUN_UID,
        "fsGroup": RUN_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def store_env(s3: S3Store | None, settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    """Environment for reaching the store, and the Secret holding its credentials."""
    env = []
    endpoint = (s3.endpoint if s3 else None) or settings.s3_endpoint
    if endpoint:
        env.append({"name": "CONVEYOR_S3_ENDPOINT", "value": endpoint})
    if s3 and s3.region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": s3.region})
    secret = (s3.credentials_secret if s3 else None) or settings.credentials_secret
    return env, secret


def desired_job(
    owner: Owner,
    pipeline: str,
    stage: Stage,
    inv: StageInvocation,
    s3: S3Store | None,
    settings: Settings,
) -> dict[str, Any]:
    name = job_name(owner.name, stage.name)
    labels = standard_labels(
        component="stage", instance=owner.name, pipeline=pipeline, run=owner.name, stage=stage.name
    )
    labels.update(job_selector(owner))
    env, secret = store_env(s3, settings)
    env += [
        {"name": ENV_VAR, "value": inv.to_json()},
        {"name": "HOME", "value": "/tmp"},
        {"name": "CONVEYOR_TERMINATION_LOG", "value": TERMINATION_LOG},
    ]
    env += [{"name": e.name, "value": substitute(e.value, inv.params)} for e in stage.env]
    container: dict[str, Any] = {
        "name": "stage",
        "image": stage.image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": env,
        "securityContext": restricted_container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if stage.uses is not None:
        container["command"] = ["conveyor", "stage"]
    else:
        if stage.command:
            container["command"] = substitute(list(stage.command), inv.params)
        if stage.args:
            container["args"] = substitute(list(stage.args), inv.params)
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    if stage.resources is not None:
        container["resources"] = stage.resources.model_dump(exclude_none=True)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security(),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if settings.stage_service_account:
        pod_spec["serviceAccountName"] = settings.stage_service_account
    spec: dict[str, Any] = {
        "backoffLimit": stage.retries,
        "ttlSecondsAfterFinished": settings.job_ttl_seconds,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if stage.timeout_seconds is not None:
        # per attempt, as the field says: the kubelet fails a pod past its deadline and the Job
        # controller retries it (a Job's own activeDeadlineSeconds would cover every attempt)
        pod_spec["activeDeadlineSeconds"] = stage.timeout_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {CACHE_KEY_ANNOTATION: inv.cache_key},
            "ownerReferences": [owner.reference()],
        },
        "spec": spec,
    }


SERVE_PORT = 8000
MODEL_ANNOTATION = "conveyor.dev/model-sha256"
PROMETHEUS_SCRAPE = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(SERVE_PORT),
    "prometheus.io/path": "/metrics",
}


def model_server_labels(name: str) -> dict[str, str]:
    return standard_labels(component="model-server", instance=name, deployment=name)


def model_server_name(name: str) -> str:
    """The name of a ModelDeployment's Deployment, Service and monitoring objects: its own when
    that is a valid Service name (a DNS-1035 label), else a shortened one with a hash."""
    return dns1035_label(name)


def model_server_metadata(owner: Owner, **extra: Any) -> dict[str, Any]:
    """Metadata of the objects serving a ModelDeployment: named after it, owned by it."""
    return {
        "name": model_server_name(owner.name),
        "namespace": owner.namespace,
        "labels": model_server_labels(owner.name),
        "ownerReferences": [owner.reference()],
        **extra,
    }


def selector_labels(name: str) -> dict[str, str]:
    """Immutable keys only: a Deployment's selector cannot change."""
    return {
        "app.kubernetes.io/name": "conveyor",
        "app.kubernetes.io/instance": label_value(name),
        "app.kubernetes.io/component": "model-server",
    }


def desired_deployment(
    owner: Owner,
    spec: ModelDeploymentSpec,
    model_uri: str,
    model_sha: str,
    s3: S3Store | None,
    settings: Settings,
) -> dict[str, Any]:
    labels = model_server_labels(owner.name)
    env, secret = store_env(s3, settings)
    env.append({"name": "HOME", "value": "/tmp"})
    args = ["serve", "--model", model_uri, "--host", "0.0.0.0", "--port", str(SERVE_PORT)]
    drift = spec.monitoring.drift if spec.monitoring else None
    if drift is not None:
        args += [
            "--drift-method",
            drift.method,
            "--window",
            str(drift.window),
            "--min-samples",
            str(drift.min_samples),
        ]
    if spec.batching is not None:
        args += [
            "--batching" if spec.batching.enabled else "--no-batching",
            "--max-batch-size",
            str(spec.batching.max_batch_size),
            "--max-latency-ms",
            str(spec.batching.max_latency_ms),
        ]
    probe = {
        "httpGet": {"path": "/v2/health/ready", "port": "http"},
        "periodSeconds": 5,
        "failureThreshold": 3,
    }
    container: dict[str, Any] = {
        "name": "server",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["conveyor"],
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": SERVE_PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "initialDelaySeconds": 10,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    if spec.resources is not None:
        container["resources"] = spec.resources.model_dump(exclude_none=True)
    rollout = spec.rollout or Rollout()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": model_server_metadata(owner),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(owner.name)},
            "progressDeadlineSeconds": rollout.progress_deadline_seconds,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": rollout.max_unavailable, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {MODEL_ANNOTATION: model_sha}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": restricted_pod_security(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def desired_service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": model_server_metadata(
            owner,
            annotations={
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(SERVE_PORT),
                "prometheus.io/path": "/metrics",
            },
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [{"name": "http", "port": SERVE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def desired_service_monitor(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": model_server_metadata(owner),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner.name)},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }


def desired_prometheus_rule(owner: Owner, model: str, threshold: float, for_: str) -> dict[str, Any]:
    """Drift and error-rate alerts for this deployment's model (the shapes of
    deploy/prometheus/conveyor-rules.yaml, scoped to one model)."""
    sel = f'model="{model}"'
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": model_server_metadata(owner),
        "spec": {
            "groups": [
                {
                    "name": f"conveyor-{owner.name}",
                    "rules": [
                        {
                            "alert": "ConveyorModelDrift",
                            "expr": f"max(conveyor_drift_score{{{sel}}}) > {threshold}",
                            "for": for_,
                            "labels": {"severity": "warning", "modeldeployment": owner.name},
                            "annotations": {
                                "summary": f"{owner.name}: model {model} drifted from its training data"
                            },
                        },
                        {
                            "alert": "ConveyorModelErrors",
                            "expr": f'sum(rate(conveyor_requests_total{{{sel},code=~"5.."}}[5m])) / '
                            f"sum(rate(conveyor_requests_total{{{sel}}}[5m])) > 0.05",
                            "for": "5m",
                            "labels": {"severity": "critical", "modeldeployment": owner.name},
                            "annotations": {"summary": f"{owner.name}: more than 5% of requests fail"},
                        },
                    ],
                }
            ]
        },
    }


def desired_triggered_run(
    name: str,
    namespace: str,
    pipeline: str,
    trigger: str,
    params: dict[str, str] | None = None,
    owner: Owner | None = None,
    deployment: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A PipelineRun the operator starts itself: on a schedule, or to retrain on drift."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {
            **standard_labels(
                component="pipelinerun", instance=name, pipeline=pipeline, deployment=deployment
            ),
            "conveyor.dev/trigger": trigger,
        },
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner.reference()]
    if reason:
        metadata["annotations"] = {"conveyor.dev/trigger-reason": reason}
    spec: dict[str, Any] = {"pipelineRef": {"name": pipeline}}
    if params:
        spec["params"] = dict(params)
    return {"apiVersion": API_VERSION, "kind": "PipelineRun", "metadata": metadata, "spec": spec}
