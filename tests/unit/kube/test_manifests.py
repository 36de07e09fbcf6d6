"""Manifest builders and `conveyor render`: whole-dict comparisons, official schemas, restricted PSS."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conveyor.api.common import S3Store
from conveyor.api.modeldeployment import ModelDeploymentSpec
from conveyor.api.pipeline import Stage
from conveyor.engine.invocation import StageInvocation
from conveyor.kube.manifests import Owner, desired_deployment, desired_job, desired_service
from conveyor.kube.observe import observe_job
from conveyor.kube.settings import Settings
from conveyor.stages.runner import termination_log
from tests.conftest import EXAMPLES
from tests.k8s import restricted_violations, validate_k8s

OWNER = Owner("PipelineRun", "r1", "uid-1", "ml")
INV = StageInvocation(
    namespace="ml",
    pipeline="p",
    run="r1",
    stage="train",
    uses="train",
    params={"who": "me"},
    store="s3://b/x",
    output_prefix="s3://b/x/ml/p/r1/train",
    cache_key="k",
)


def test_builtin_stage_job_whole() -> None:
    stage = Stage.model_validate(
        {
            "name": "train",
            "uses": "train",
            "retries": 2,
            "timeoutSeconds": 600,
            "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
            "env": [{"name": "WHO", "value": "$(params.who)"}],
        }
    )
    s3 = S3Store(bucket="bkt", prefix="x", endpoint="http://minio:9000", credentials_secret="s3")
    job = desired_job(OWNER, "p", stage, INV, s3, Settings(image="conveyor:1", job_ttl_seconds=60))
    labels = {
        "app.kubernetes.io/name": "conveyor",
        "app.kubernetes.io/instance": "r1",
        "app.kubernetes.io/component": "stage",
        "app.kubernetes.io/part-of": "conveyor",
        "app.kubernetes.io/managed-by": "conveyor-operator",
        "conveyor.dev/pipeline": "p",
        "conveyor.dev/pipelinerun": "r1",
        "conveyor.dev/stage": "train",
        "conveyor.dev/pipelinerun-uid": "uid-1",
    }
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "r1-train",
            "namespace": "ml",
            "labels": labels,
            "annotations": {"conveyor.dev/cache-key": "k"},
            "ownerReferences": [
                {
                    "apiVersion": "conveyor.dev/v1alpha1",
                    "kind": "PipelineRun",
                    "name": "r1",
                    "uid": "uid-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 60,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "activeDeadlineSeconds": 600,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "stage",
                            "image": "conveyor:1",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["conveyor", "stage"],
                            "env": [
                                {"name": "CONVEYOR_S3_ENDPOINT", "value": "http://minio:9000"},
                                {"name": "CONVEYOR_INVOCATION", "value": INV.to_json()},
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "CONVEYOR_TERMINATION_LOG", "value": "/dev/termination-log"},
                                {"name": "WHO", "value": "me"},
                            ],
                            "envFrom": [{"secretRef": {"name": "s3"}}],
                            "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    validate_k8s(job)
    assert restricted_violations(job["spec"]["template"]["spec"]) == []


def test_the_stage_pod_and_the_job_observer_read_what_the_job_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The names shared by the manifests, the stage runner and the observer agree: the runner
    finds its invocation and termination log in the variables the container sets, the observer
    the cache key in the Job's annotations."""
    stage = Stage.model_validate({"name": "train", "uses": "train"})
    job = desired_job(OWNER, "p", stage, INV, None, Settings())
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert StageInvocation.from_env(env) == INV
    log_var = next(k for k, v in env.items() if v == container["terminationMessagePath"])
    monkeypatch.setenv(log_var, str(tmp_path / "log"))
    assert termination_log() == tmp_path / "log"
    assert observe_job(job, [], None).cache_key == INV.cache_key


def test_custom_stage_job_uses_its_image_and_command() -> None:
    stage = Stage.model_validate(
        {"name": "x", "image": "repo/etl:2", "command": ["etl"], "args": ["--who", "$(params.who)"]}
    )
    job = desired_job(OWNER, "p", stage, INV, None, Settings(credentials_secret="default-s3"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["command"], container["args"]) == (
        "repo/etl:2",
        ["etl"],
        ["--who", "me"],
    )
    assert container["envFrom"] == [{"secretRef": {"name": "default-s3"}}]
    assert "activeDeadlineSeconds" not in job["spec"]
    assert "activeDeadlineSeconds" not in job["spec"]["template"]["spec"]
    validate_k8s(job)


def test_restricted_checker_catches_violations() -> None:
    assert restricted_violations(
        {
            "hostNetwork": True,
            "containers": [{"name": "c"}],
            "volumes": [{"name": "v", "hostPath": {"path": "/"}}],
        }
    ) == [
        "hostNetwork is set",
        "volume v uses {'hostPath'}",
        "c: allowPrivilegeEscalation is not false",
        "c: capabilities do not drop ALL",
        "c: runAsNonRoot is not true",
        "c: seccompProfile is None",
    ]


@pytest.mark.parametrize(
    "files",
    [
        ["breast-cancer/pipeline.yaml", "breast-cancer/run.yaml"],
        ["penguins/pipeline.yaml"],
    ],
)
def test_render_output_is_valid_and_restricted(files: list[str]) -> None:
    args = [a for f in files for a in ("-f", str(EXAMPLES / f))]
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "render", *args, "--store", "s3://mlops/cv"],
        capture_output=True,
        text=True,
        check=True,
    )
    jobs = list(yaml.safe_load_all(proc.stdout))
    assert len(jobs) == 5
    assert "&id" not in proc.stdout  # no YAML anchors: plain manifests
    for job in jobs:
        validate_k8s(job)
        assert restricted_violations(job["spec"]["template"]["spec"]) == []


def test_render_without_a_store_says_how_to_fix() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "render", "-f", str(EXAMPLES / "breast-cancer" / "pipeline.yaml")],
        capture_output=True,
        text=True,
        env={k: v for k, v in __import__("os").environ.items() if k != "CONVEYOR_STORE"},
    )
    assert proc.returncode == 1
    assert "set spec.artifacts.s3, or CONVEYOR_STORE" in proc.stderr


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {"CONVEYOR_IMAGE": "x:1", "CONVEYOR_NAMESPACES": "a,b", "CONVEYOR_RESYNC_SECONDS": "3"}
    )
    assert (s.image, s.namespaces, s.resync_seconds) == ("x:1", ["a", "b"], 3.0)
    with pytest.raises(ValueError, match="CONVEYOR_JOB_TTL_SECONDS"):
        Settings.from_env({"CONVEYOR_JOB_TTL_SECONDS": "-1"})


@pytest.mark.parametrize("name", ["m", "a" * 63, "1-model", "my.model", "m" * 253])
def test_model_server_children_of_any_valid_name_are_valid(name: str) -> None:
    owner = Owner("ModelDeployment", name, "uid-2", "ml")
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m.skops"}})
    dep = desired_deployment(owner, spec, "s3://b/m.skops", "sha", None, Settings())
    svc = desired_service(owner)
    server = dep["metadata"]["name"]
    assert server == svc["metadata"]["name"] and len(server) <= 63
    assert re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", server)  # a Service's name: DNS-1035
    assert (server == name) == (len(name) <= 63 and "." not in name and name[0].isalpha())
    assert dep["metadata"]["ownerReferences"][0]["name"] == name
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["selector"] == selector
    validate_k8s(dep)
    validate_k8s(svc)


def test_model_server_rollout_settings_reach_the_deployment() -> None:
    owner = Owner("ModelDeployment", "m", "uid-3", "ml")
    default = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m.skops"}})
    dep = desired_deployment(owner, default, "s3://b/m.skops", "sha", None, Settings())
    assert dep["spec"]["progressDeadlineSeconds"] == 300
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": "s3://b/m.skops"}, "rollout": {"maxUnavailable": 1, "progressDeadlineSeconds": 20}}
    )
    dep = desired_deployment(owner, spec, "s3://b/m.skops", "sha", None, Settings())
    assert dep["spec"]["progressDeadlineSeconds"] == 20
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 1}
    validate_k8s(dep)


MODEL = "s3://b/ml/p/r1/train/model.skops"
SERVER_LABELS = {
    "app.kubernetes.io/name": "conveyor",
    "app.kubernetes.io/instance": "md",
    "app.kubernetes.io/component": "model-server",
    "app.kubernetes.io/part-of": "conveyor",
    "app.kubernetes.io/managed-by": "conveyor-operator",
    "conveyor.dev/modeldeployment": "md",
}
SERVER_SELECTOR = {
    "app.kubernetes.io/name": "conveyor",
    "app.kubernetes.io/instance": "md",
    "app.kubernetes.io/component": "model-server",
}
SERVER_METADATA = {
    "name": "md",
    "namespace": "ml",
    "labels": SERVER_LABELS,
    "ownerReferences": [
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": "md",
            "uid": "uid-2",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ],
}


def _server_container(args: list[str]) -> dict[str, object]:
    return {
        "name": "server",
        "image": "conveyor:1",
        "imagePullPolicy": "IfNotPresent",
        "command": ["conveyor"],
        "args": ["serve", "--model", MODEL, "--host", "0.0.0.0", "--port", "8000", *args],
        "env": [
            {"name": "CONVEYOR_S3_ENDPOINT", "value": "http://minio:9000"},
            {"name": "AWS_DEFAULT_REGION", "value": "eu-1"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
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
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "envFrom": [{"secretRef": {"name": "s3-read-only"}}],  # never the read-write "s3"
        "resources": {"requests": {"cpu": "1"}},
    }


@pytest.mark.parametrize(
    ("extra", "args"),
    [
        pytest.param({}, [], id="defaults"),
        pytest.param(
            {
                "monitoring": {"drift": {"method": "ks", "window": 50, "minSamples": 5}},
                "batching": {"enabled": False, "maxBatchSize": 8, "maxLatencyMs": 3},
            },
            [
                *("--drift-method", "ks", "--window", "50", "--min-samples", "5"),
                *("--no-batching", "--max-batch-size", "8", "--max-latency-ms", "3"),
            ],
            id="drift-and-batching",
        ),
        pytest.param(
            {"batching": {"enabled": True}},
            ["--batching", "--max-batch-size", "32", "--max-latency-ms", "5"],
            id="batching-on",
        ),
    ],
)
def test_model_server_deployment_whole(extra: dict[str, object], args: list[str]) -> None:
    owner = Owner("ModelDeployment", "md", "uid-2", "ml")
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": MODEL}, "replicas": 3, "resources": {"requests": {"cpu": "1"}}, **extra}
    )
    s3 = S3Store(
        bucket="bkt",
        endpoint="http://minio:9000",
        region="eu-1",
        credentials_secret="s3",
        read_only_credentials_secret="s3-read-only",
    )
    dep = desired_deployment(owner, spec, MODEL, "sha", s3, Settings(image="conveyor:1"))
    assert dep == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": SERVER_METADATA,
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": SERVER_SELECTOR},
            "progressDeadlineSeconds": 300,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": SERVER_LABELS, "annotations": {"conveyor.dev/model-sha256": "sha"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_server_container(args)],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    validate_k8s(dep)
    assert restricted_violations(dep["spec"]["template"]["spec"]) == []


def test_model_server_service_whole() -> None:
    svc = desired_service(Owner("ModelDeployment", "md", "uid-2", "ml"))
    assert svc == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **SERVER_METADATA,
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8000",
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "type": "ClusterIP",
            "selector": SERVER_SELECTOR,
            "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    validate_k8s(svc)
