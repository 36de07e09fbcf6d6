"""Pure builders of the Kubernetes objects the operator creates (validated in tests against
the official schemas and the restricted Pod Security profile). The names the pods and the
operator share (environment, annotations, labels, probe paths) come from `conveyor.contract`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor import contract
from conveyor.api.common import API_VERSION, S3Store
from conveyor.api.modeldeployment import ModelDeploymentSpec, Rollout
from conveyor.api.pipeline import Stage
from conveyor.engine.credentials import StoreSecrets, serving_secret, store_secrets
from conveyor.engine.invocation import StageInvocation
from conveyor.engine.names import child_name, dns1035_label, label_value, standard_labels
from conveyor.engine.params import substitute
from conveyor.kube.settings import Settings

RUN_UID = 10001  # the image's USER; Settings.pod_run_as_user (None on OpenShift: it assigns one)


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
    return {contract.RUN_LABEL: label_value(owner.name), contract.RUN_UID_LABEL: owner.uid}


def restricted_pod_security(uid: int | None = RUN_UID) -> dict[str, Any]:
    """The restricted profile; with `uid` None no UID is named (OpenShift's restricted SCC
    assigns one from the namespace's range and refuses pods naming another)."""
    ids = {} if uid is None else {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid}
    return {"runAsNonRoot": True, **ids, "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def secrets_of(s3: S3Store | None, settings: Settings) -> StoreSecrets:
    """Stage pods' read-write and model servers' read-only Secrets (opt-in checked by the reconcilers)."""
    return store_secrets(s3, settings.credentials_secret, settings.read_only_credentials_secret)


def store_env(s3: S3Store | None, settings: Settings) -> list[dict[str, Any]]:
    """Environment for reaching the store (its credentials come from a Secret, by envFrom)."""
    env = []
    endpoint = (s3.endpoint if s3 else None) or settings.s3_endpoint
    if endpoint:
        env.append({"name": contract.S3_ENDPOINT_ENV, "value": endpoint})
    if s3 and s3.region:
        env.append({"name": contract.S3_REGION_ENV, "value": s3.region})
    return env


def stage_container(
    stage: Stage, inv: StageInvocation, s3: S3Store | None, settings: Settings
) -> dict[str, Any]:
    """The one container of a stage's pod: `conveyor stage` for a built-in, else the stage's
    own image and command, with the invocation and the termination log in its environment."""
    env = store_env(s3, settings)
    env += [
        {"name": contract.INVOCATION_ENV, "value": inv.to_json()},
        {"name": "HOME", "value": "/tmp"},
        {"name": contract.TERMINATION_LOG_ENV, "value": contract.TERMINATION_LOG_PATH},
    ]
    env += [{"name": e.name, "value": substitute(e.value, inv.params)} for e in stage.env]
    container: dict[str, Any] = {
        "name": "stage",
        "image": stage.image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": env,
        "securityContext": restricted_container_security(),
        "terminationMessagePath": contract.TERMINATION_LOG_PATH,
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
    if (rw := secrets_of(s3, settings).read_write) is not None:
        container["envFrom"] = [{"secretRef": {"name": rw.name}}]
    resources = stage.resources or settings.stage_resources  # the operator's default
    if resources is not None:
        container["resources"] = resources.model_dump(exclude_none=True)
    return container


def stage_pod_spec(stage: Stage, container: dict[str, Any], settings: Settings) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security(settings.pod_run_as_user),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if settings.stage_service_account:
        pod_spec["serviceAccountName"] = settings.stage_service_account
    if stage.timeout_seconds is not None:
        # per attempt, as the field says: the kubelet fails a pod past its deadline and the Job
        # controller retries it (a Job's own activeDeadlineSeconds would cover every attempt)
        pod_spec["activeDeadlineSeconds"] = stage.timeout_seconds
    return pod_spec


def desired_job(
    owner: Owner,
    pipeline: str,
    stage: Stage,
    inv: StageInvocation,
    s3: S3Store | None,
    settings: Settings,
) -> dict[str, Any]:
    labels = standard_labels(
        component="stage", instance=owner.name, pipeline=pipeline, run=owner.name, stage=stage.name
    )
    labels.update(job_selector(owner))
    pod_spec = stage_pod_spec(stage, stage_container(stage, inv, s3, settings), settings)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(owner.name, stage.name),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {contract.CACHE_KEY_ANNOTATION: inv.cache_key},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": stage.retries,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


SERVE_PORT = 8000
PORT_NAME = contract.SERVE_PORT_NAME  # the container port's: probes, Service, drift reader
PROMETHEUS_SCRAPE = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(SERVE_PORT),
    "prometheus.io/path": contract.METRICS_PATH,
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


def server_args(spec: ModelDeploymentSpec, model_uri: str) -> list[str]:
    """`conveyor serve` arguments: the model, the port, drift, live quality and batching settings."""
    args = ["serve", "--model", model_uri, "--host", "0.0.0.0", "--port", str(SERVE_PORT)]
    drift = spec.monitoring.drift if spec.monitoring else None
    if drift is not None:
        args += ["--drift-method", drift.method, "--window", str(drift.window)]
        args += ["--min-samples", str(drift.min_samples)]
    performance = spec.monitoring.performance if spec.monitoring else None
    if performance is not None:  # the labelled window the live quality is measured over
        args += ["--quality-window", str(performance.window)]
    batching = spec.batching
    if batching is not None:
        args += ["--batching" if batching.enabled else "--no-batching"]
        args += ["--max-batch-size", str(batching.max_batch_size)]
        args += ["--max-latency-ms", str(batching.max_latency_ms)]
    return args


def _probe(path: str, period: int, failures: int, **extra: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        **extra,
        "failureThreshold": failures,
    }


def server_container(
    spec: ModelDeploymentSpec, model_uri: str, s3: S3Store | None, settings: Settings
) -> dict[str, Any]:
    """The model server's container: probes on the V2 health paths, `/metrics` on `http`; the
    store's read-only Secret (`NoReadOnlySecret` when only a read-write one is set)."""
    env = store_env(s3, settings)
    ro = serving_secret(secrets_of(s3, settings))
    env.append({"name": "HOME", "value": "/tmp"})
    container: dict[str, Any] = {
        "name": "server",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["conveyor"],
        "args": server_args(spec, model_uri),
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": SERVE_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe(contract.HEALTH_READY_PATH, 5, 3),
        "livenessProbe": _probe(contract.HEALTH_LIVE_PATH, 10, 3, initialDelaySeconds=10),
        "startupProbe": _probe(contract.HEALTH_LIVE_PATH, 2, 60),
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if ro is not None:
        container["envFrom"] = [{"secretRef": {"name": ro.name}}]
    if spec.resources is not None:
        container["resources"] = spec.resources.model_dump(exclude_none=True)
    return container


def desired_deployment(
    owner: Owner,
    spec: ModelDeploymentSpec,
    model_uri: str,
    model_sha: str,
    s3: S3Store | None,
    settings: Settings,
) -> dict[str, Any]:
    rollout = spec.rollout or Rollout()
    pod_spec = {
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security(settings.pod_run_as_user),
        "containers": [server_container(spec, model_uri, s3, settings)],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    template = {
        "metadata": {
            "labels": model_server_labels(owner.name),
            "annotations": {contract.MODEL_ANNOTATION: model_sha},
        },
        "spec": pod_spec,
    }
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
            "template": template,
        },
    }


def desired_service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": model_server_metadata(owner, annotations=dict(PROMETHEUS_SCRAPE)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [{"name": PORT_NAME, "port": SERVE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def desired_service_monitor(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": model_server_metadata(owner),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner.name)},
            "endpoints": [{"port": PORT_NAME, "path": contract.METRICS_PATH, "interval": "15s"}],
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
            contract.TRIGGER_LABEL: trigger,
        },
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner.reference()]
    if reason:
        metadata["annotations"] = {contract.TRIGGER_REASON_ANNOTATION: reason}
    spec: dict[str, Any] = {"pipelineRef": {"name": pipeline}}
    if params:
        spec["params"] = dict(params)
    return {"apiVersion": API_VERSION, "kind": "PipelineRun", "metadata": metadata, "spec": spec}
