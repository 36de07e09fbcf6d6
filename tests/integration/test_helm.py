"""The Helm chart with the real helm (v4): lint, render, official schemas, restricted pods,
strict values, RBAC against what the operator really sends, generated files in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.k8s import pod_spec_of, restricted_violations, validate_k8s

sys.path.insert(0, str(REPO / "scripts"))
from k8s_tools import ensure

CHART = REPO / "charts" / "conveyor"
SCENARIOS = [None, *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))]
NOT_IN_KUBERNETES = {"ServiceMonitor", "PrometheusRule"}  # the Prometheus Operator's CRDs


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure() / "helm"


def template(helm: Path, values: str | None = None, *extra: str) -> list[dict[str, Any]]:
    args = [str(helm), "template", "conveyor", str(CHART), "--namespace", "conveyor", *extra]
    if values:
        args += ["-f", str(CHART / "ci" / values)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("values", SCENARIOS, ids=[v or "defaults" for v in SCENARIOS])
def test_lint_strict(helm: Path, values: str | None) -> None:
    args = [str(helm), "lint", "--strict", str(CHART)] + (
        ["-f", str(CHART / "ci" / values)] if values else []
    )
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", SCENARIOS, ids=[v or "defaults" for v in SCENARIOS])
def test_rendered_objects_are_valid_and_restricted(helm: Path, values: str | None) -> None:
    docs = template(helm, values)
    assert {d["kind"] for d in docs} >= {"Deployment", "ServiceAccount", "ClusterRole", "Service"}
    for doc in docs:
        if doc["kind"] not in NOT_IN_KUBERNETES:
            validate_k8s(doc)
        spec = pod_spec_of(doc)
        if spec is not None:
            assert restricted_violations(spec) == [], doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"watchNamespaces": ["Bad_NS"]}, "watchNamespaces"),
        ({"replicas": 3}, "replicas"),
        ({"operator": {"store": "http://not-s3"}}, "store"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"podDisruptionBudget": {"minAvailable": "half"}}, "minAvailable"),
        ({"modelServerNodePorts": [{"modelDeployment": "m", "nodePort": 8000}]}, "nodePort"),
        ({"networkPolicy": {"apiServerCIDRs": ["kubernetes"]}}, "apiServerCIDRs"),
        ({"stageResources": {"request": {"cpu": 1}}}, "stageResources"),
        ({"fullnameOverride": "Bad_Name"}, "fullnameOverride"),
    ],
)
def test_bad_values_are_rejected_by_the_schema(
    helm: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = subprocess.run(
        [str(helm), "template", "conveyor", str(CHART), "-f", str(path)], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr


def _allowed(rules: list[dict[str, Any]], verb: str, group: str, resource: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


def test_rbac_has_no_wildcards_and_no_secret_listing(helm: Path) -> None:
    """What the operator may do is enforced by a real API server in tests/integration/kube
    (the operator runs there as this ServiceAccount); this checks the shape of the grants."""
    role = next(d for d in template(helm) if d["kind"] == "ClusterRole")
    rules = role["rules"]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    # `get` only: a named Secret's opt-in label, read as metadata (engine.credentials)
    assert [r["verbs"] for r in rules if "secrets" in r["resources"]] == [["get"]]


def test_namespaced_install_uses_roles(helm: Path) -> None:
    docs = template(helm, "namespaced-values.yaml")
    cluster = next(d for d in docs if d["kind"] == "ClusterRole")
    assert {r for rule in cluster["rules"] for r in rule["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
    }
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    assert sorted(roles) == ["ml", "ml-staging"]
    assert _allowed(roles["ml"]["rules"], "create", "batch", "jobs")
    operator = next(d for d in docs if d["kind"] == "Deployment")
    assert operator["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "operator",
        "--namespace=ml",
        "--namespace=ml-staging",
    ]


def test_crds_in_chart_and_deploy_are_byte_identical(helm: Path) -> None:
    """The chart's CRDs are crds/ byte for byte; rendered, they differ only by the chart's labels."""
    deployed = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((REPO / "deploy" / "conveyor.yaml").read_text())
        if d and d["kind"] == "CustomResourceDefinition"
    }
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        assert (CHART / "files" / "crds" / crd.name).read_bytes() == crd.read_bytes()
        generated = yaml.safe_load(crd.read_text())
        rendered = deployed[generated["metadata"]["name"]]
        labels = rendered["metadata"].pop("labels")
        own = generated["metadata"].pop("labels", {})
        assert rendered == generated, f"{crd.name} differs in deploy/conveyor.yaml"
        assert labels.items() >= own.items()
        assert labels["app.kubernetes.io/part-of"] == "conveyor"
        assert labels["helm.sh/chart"] == "conveyor-0.1.0"
    for copy, source in (
        ("conveyor-rules.yaml", "prometheus/conveyor-rules.yaml"),
        ("conveyor-dashboard.json", "grafana/conveyor-dashboard.json"),
    ):
        assert (CHART / "files" / copy).read_bytes() == (REPO / "deploy" / source).read_bytes()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "render_manifests.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout


def test_crds_off_and_monitoring_on(helm: Path) -> None:
    docs = template(helm, "monitoring-values.yaml")
    kinds = [d["kind"] for d in docs]
    assert "CustomResourceDefinition" not in kinds
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]] == [
        "ConveyorModelDrift",
        "ConveyorModelErrors",
        "ConveyorModelAccuracyLow",
        "ConveyorPipelineRunsFailing",
    ]
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_minio_scenario_wires_the_store(helm: Path) -> None:
    docs = template(helm, "minio-values.yaml")
    env = {
        e["name"]: e.get("value")
        for e in next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "conveyor")[
            "spec"
        ]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["CONVEYOR_STORE"] == "s3://conveyor/conveyor"
    assert env["CONVEYOR_S3_ENDPOINT"] == "http://conveyor-minio.conveyor.svc:9000"
    assert env["CONVEYOR_CREDENTIALS_SECRET"] == "conveyor-minio-readwrite"
    assert env["CONVEYOR_READ_ONLY_CREDENTIALS_SECRET"] == "conveyor-minio-readonly"
    assert {d["kind"] for d in docs if "minio" in d["metadata"]["name"]} == {
        "Secret",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "Job",
    }


def test_every_operator_variable_the_chart_sets_is_a_setting_and_parses(helm: Path) -> None:
    """No dead knob: each CONVEYOR_* the chart renders is a field the operator reads, and the
    rendered values (monitoring scenario: a Prometheus URL too) parse as its settings."""
    from conveyor.kube.settings import PREFIX, Settings

    docs = template(helm, "monitoring-values.yaml")
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "conveyor")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    rendered = {k for k in env if k.startswith(PREFIX)}
    fields = {PREFIX + name.upper() for name in Settings.model_fields}
    assert rendered - fields == set()
    wanted = {"CONVEYOR_PROMETHEUS_URL", "CONVEYOR_DRIFT_SECONDS", "CONVEYOR_PIPELINE_RESYNC_SECONDS"}
    assert wanted <= rendered
    settings = Settings.from_env({k: v for k, v in env.items() if k in rendered})
    assert settings.prometheus_url == env["CONVEYOR_PROMETHEUS_URL"] and settings.drift_seconds == 15


def test_minio_hands_out_a_read_write_and_a_read_only_user_never_root(helm: Path) -> None:
    """Pods get MinIO users made by the setup Job, in Secrets that opt in to being mounted; the
    root credentials stay with MinIO and that Job, in a Secret that does not opt in."""
    import json

    docs = template(helm, "minio-values.yaml")
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    opted_in = {
        n for n, d in secrets.items() if d["metadata"]["labels"].get("conveyor.dev/credentials") == "true"
    }
    assert opted_in == {"conveyor-minio-readwrite", "conveyor-minio-readonly"}
    assert set(secrets["conveyor-minio"]["stringData"]) == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    users = {n: secrets[n]["stringData"]["AWS_ACCESS_KEY_ID"] for n in opted_in}
    assert users == {
        "conveyor-minio-readwrite": "conveyor-stages",
        "conveyor-minio-readonly": "conveyor-serving",
    }
    policies = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "conveyor-minio-policies"
    )
    actions = {
        name.removesuffix(".json"): {a for s in json.loads(text)["Statement"] for a in s["Action"]}
        for name, text in policies["data"].items()
    }
    assert actions["readonly"] == {"s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject"}
    assert {"s3:PutObject", "s3:DeleteObject"} <= actions["readwrite"]
    job = next(d for d in docs if d["kind"] == "Job")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert 'mc admin policy create conveyor "conveyor-$access" "/policies/$access.json"' in script
