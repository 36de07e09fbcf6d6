"""The chart's knobs (issue 14), rendered by the real helm: names, image digest, pod labels and
annotations, extra environment, priority class, PodDisruptionBudget, security contexts that
need no fixed UID, NetworkPolicies that select what the operator really labels, default
resources, kubeVersion, the Grafana dashboard, the kind NodePort, and a README of every value."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.engine.names import standard_labels
from conveyor.kube.manifests import SERVE_PORT, model_server_labels, selector_labels
from conveyor.kube.settings import PREFIX, Settings
from tests.conftest import REPO
from tests.integration.test_helm import CHART, template

sys.path.insert(0, str(REPO / "scripts"))
from chart_readme import render as chart_readme
from k8s_tools import ensure


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure() / "helm"


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)}"
    return found[0]


def operator_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    )
    return deployment["spec"]["template"]


def test_names_image_digest_and_pod_knobs(helm: Path) -> None:
    docs = template(helm, "knobs-values.yaml")
    assert {d["metadata"]["name"] for d in docs if d["kind"] != "CustomResourceDefinition"} <= {
        "ml-pipelines",
        "ml-pipelines-metrics",
    }
    assert {d["metadata"]["labels"]["app.kubernetes.io/name"] for d in docs} == {"pipelines"}
    pod = operator_pod(docs)
    container = pod["spec"]["containers"][0]
    image = "registry.example.com/ml/conveyor@sha256:" + "0123456789abcdef" * 4
    env = {e["name"]: e for e in container["env"]}
    assert container["image"] == env["CONVEYOR_IMAGE"]["value"] == image
    assert pod["metadata"]["labels"]["team"] == "ml-platform"
    assert pod["metadata"]["annotations"] == {"example.com/owner": "ml-platform"}
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert env["HTTPS_PROXY"]["value"] == "http://proxy.example.com:3128"
    assert env["NO_PROXY"]["valueFrom"] == {"configMapKeyRef": {"name": "proxy", "key": "no-proxy"}}
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000680000
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": one(docs, "Deployment")["spec"]["selector"]["matchLabels"]},
    }


def test_pdb_defaults_to_max_unavailable(helm: Path) -> None:
    docs = template(helm, None, "--set", "podDisruptionBudget.enabled=true")
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not [d for d in template(helm) if d["kind"] == "PodDisruptionBudget"]


def test_default_security_context_needs_no_fixed_uid(helm: Path) -> None:
    """OpenShift's restricted SCC assigns a UID from the namespace's range and refuses a pod
    that asks for another: the operator pod names none (the image's numeric USER runs elsewhere)."""
    pod = operator_pod(template(helm))["spec"]
    contexts = [pod["securityContext"], *(c["securityContext"] for c in pod["containers"])]
    for context in contexts:
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(context), context
        assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_default_resources_of_stage_pods_and_minio(helm: Path) -> None:
    docs = template(helm, "minio-values.yaml")
    env = {e["name"]: e.get("value") for e in operator_pod(docs)["spec"]["containers"][0]["env"]}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith(PREFIX) and v is not None})
    assert settings.stage_resources is not None
    assert settings.stage_resources.model_dump(exclude_none=True) == values["stageResources"]
    minio = one(docs, "Deployment", "conveyor-minio")["spec"]["template"]["spec"]["containers"][0]
    assert minio["resources"] == values["minio"]["resources"]
    job = one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert job["resources"] == values["minio"]["jobResources"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_network_policies_select_what_the_operator_labels(helm: Path) -> None:
    docs = template(helm, "networkpolicy-values.yaml")
    policies = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "NetworkPolicy"
    }
    assert sorted(policies) == [
        ("conveyor", "conveyor"),
        ("conveyor", "conveyor-minio"),
        ("ml", "conveyor-model-servers"),
        ("ml-staging", "conveyor-model-servers"),
    ]
    operator = policies[("conveyor", "conveyor")]["spec"]
    assert _matches(operator["podSelector"]["matchLabels"], operator_pod(docs)["metadata"]["labels"])
    egress = operator["egress"]
    api = next(r for r in egress if {"port": 6443, "protocol": "TCP"} in r["ports"])
    assert [p["ipBlock"]["cidr"] for p in api["to"]] == ["10.96.0.1/32", "172.18.0.2/32"]
    minio_pod = one(docs, "Deployment", "conveyor-minio")["spec"]["template"]["metadata"]["labels"]
    store = next(r for r in egress if r["ports"] == [{"port": 9000, "protocol": "TCP"}])
    assert _matches(store["to"][0]["podSelector"]["matchLabels"], minio_pod)
    servers = next(r for r in egress if r["ports"] == [{"port": SERVE_PORT, "protocol": "TCP"}])
    assert _matches(servers["to"][0]["podSelector"]["matchLabels"], model_server_labels("m"))
    # MinIO: reached by stage pods (labels as the operator sets them) in any namespace
    minio = policies[("conveyor", "conveyor-minio")]["spec"]
    stage_pod = standard_labels(component="stage", instance="r1", pipeline="p", run="r1", stage="train")
    peers = minio["ingress"][0]["from"]
    assert any(
        "namespaceSelector" in p and _matches(p["podSelector"]["matchLabels"], stage_pod) for p in peers
    )
    # model servers: their port only, from the clients named and the operator (it reads /metrics)
    model = policies[("ml", "conveyor-model-servers")]["spec"]
    assert _matches(model["podSelector"]["matchLabels"], model_server_labels("any-model"))
    assert model["policyTypes"] == ["Ingress"]
    (rule,) = model["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "apps"}
    assert _matches(rule["from"][1]["podSelector"]["matchLabels"], operator_pod(docs)["metadata"]["labels"])
    assert not [d for d in template(helm) if d["kind"] == "NetworkPolicy"]


def test_kind_config_and_the_model_servers_node_port_match(helm: Path) -> None:
    kind = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    mapped = {m["containerPort"] for node in kind["nodes"] for m in node.get("extraPortMappings", [])}
    service = one(template(helm, "kind-values.yaml"), "Service", "breast-cancer-nodeport")
    assert service["spec"]["type"] == "NodePort"
    assert {p["nodePort"] for p in service["spec"]["ports"]} == mapped == {30800}
    assert service["spec"]["selector"] == selector_labels("breast-cancer")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_kube_version_is_enforced(helm: Path) -> None:
    old = subprocess.run(
        [str(helm), "template", "conveyor", str(CHART), "--kube-version", "1.27.0"],
        capture_output=True,
        text=True,
    )
    assert old.returncode != 0 and "kubeVersion" in old.stderr
    assert template(helm, None, "--kube-version", "1.28.0")


def test_grafana_dashboard_config_map(helm: Path) -> None:
    docs = template(helm, "monitoring-values.yaml")
    cm = one(docs, "ConfigMap", "conveyor-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "MLOps"}
    dashboard = json.loads((REPO / "deploy" / "grafana" / "conveyor-dashboard.json").read_text())
    assert json.loads(cm["data"]["conveyor.json"]) == dashboard
    assert not [d for d in template(helm) if d["kind"] == "ConfigMap"]


def _leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    assert readme == chart_readme(CHART / "values.yaml"), "run `make manifests`"
    keys = re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M)
    for leaf in _leaves(yaml.safe_load((CHART / "values.yaml").read_text())):
        assert any(leaf == k or leaf.startswith(k + ".") for k in keys), f"{leaf} is not in the README"


def test_readme_refuses_an_undocumented_value(tmp_path: Path) -> None:
    shutil.copy(CHART / "Chart.yaml", tmp_path / "Chart.yaml")
    values = tmp_path / "values.yaml"
    values.write_text("# -- Documented.\na: 1\nsection:\n  # -- Also.\n  b: 2\n  c: 3\n")
    with pytest.raises(SystemExit, match=r"section\.c"):
        chart_readme(values)


def test_openshift_scenario_names_no_uid_anywhere(helm: Path) -> None:
    """ci/openshift-values.yaml: no pod of the chart, and no stage pod or model server the
    operator makes with the settings the chart gives it, names a UID, GID or fsGroup."""
    from conveyor.api.modeldeployment import ModelDeploymentSpec
    from conveyor.api.pipeline import Stage
    from conveyor.kube.manifests import Owner, desired_deployment, stage_pod_spec
    from tests.k8s import pod_spec_of, restricted_violations

    docs = template(helm, "openshift-values.yaml")
    env = {e["name"]: e.get("value") for e in operator_pod(docs)["spec"]["containers"][0]["env"]}
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith(PREFIX) and v is not None})
    assert settings.pod_run_as_user is None
    stage = Stage.model_validate({"name": "train", "uses": "train"})
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m.skops"}})
    owner = Owner("ModelDeployment", "m", "uid", "ml")
    server = desired_deployment(owner, spec, "s3://b/m.skops", "0" * 64, None, settings)["spec"]["template"][
        "spec"
    ]
    pods = [pod_spec_of(d) for d in docs] + [stage_pod_spec(stage, {"name": "stage"}, settings), server]
    for pod in filter(None, pods):
        contexts = [pod["securityContext"], *(c.get("securityContext", {}) for c in pod["containers"])]
        assert not any({"runAsUser", "runAsGroup", "fsGroup"} & set(c) for c in contexts), pod
        assert pod["securityContext"]["runAsNonRoot"] is True
    assert restricted_violations(server) == []
    default = Settings.from_env({"CONVEYOR_POD_RUN_AS_USER": "10001"})
    assert stage_pod_spec(stage, {"name": "stage"}, default)["securityContext"]["runAsUser"] == 10001
