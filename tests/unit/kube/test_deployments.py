"""The ModelDeployment reconciler against the status a real Deployment controller writes and an
API server that checks names, label selectors and JSON."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

from conveyor.api.common import API_VERSION
from conveyor.api.common import S3Store as S3Spec
from conveyor.engine.names import label_value
from conveyor.kube.deployments import DeploymentReconciler
from conveyor.kube.manifests import MODEL_ANNOTATION
from conveyor.kube.settings import Settings
from tests.unit.kube.fakeapi import DNS1035_LABEL, FakeApi, FakeClient

NS = "ml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
URI_A = "s3://bkt/ml/p/r1/train/model.skops"
URI_B = "s3://bkt/ml/p/r2/train/model.skops"


def sha(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()


class Stores:
    def spec_for_uri(self, uri: str) -> S3Spec:
        return S3Spec(bucket=uri[5:].split("/")[0])


def model_deployment(
    name: str, uri: str, status: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"model": {"uri": uri}, "replicas": 1, **spec},
    }
    if status:
        body["status"] = status
    return body


def serving_a() -> dict[str, Any]:
    return {"modelUri": URI_A, "modelVersion": "r1", "lastGoodModel": URI_A, "lastGoodSha256": sha(URI_A)}


def server(name: str, uri: str, status: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "generation": generation},
        "spec": {"replicas": 1, "template": {"metadata": {"annotations": {MODEL_ANNOTATION: sha(uri)}}}},
        "status": status,
    }


def complete(generation: int) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }


def reconciler(api: FakeApi, drift: float | None = None) -> DeploymentReconciler:
    async def read_drift(namespace: str, name: str) -> float | None:
        return drift

    return DeploymentReconciler(FakeClient(api), Settings(), Stores(), drift=read_drift, clock=lambda: T0)  # type: ignore[arg-type]


def conditions(api: FakeApi, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in api.one("modeldeployments", NS, name)["status"]["conditions"]}


async def test_a_rollout_with_an_old_pod_still_ready_is_not_complete() -> None:
    api = FakeApi()
    api.put("modeldeployments", model_deployment("m", URI_B, serving_a()))
    # maxSurge 1: the new pod is not ready yet, the old one is; readyReplicas counts both kinds.
    rolling = {
        "observedGeneration": 2,
        "replicas": 2,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "unavailableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
        ],
    }
    api.put("deployments", server("m", URI_B, rolling))
    await reconciler(api).reconcile(NS, "m")
    status = api.one("modeldeployments", NS, "m")["status"]
    assert (status["modelUri"], status["lastGoodModel"], status["lastGoodSha256"]) == (
        URI_A,
        URI_A,
        sha(URI_A),
    )
    conds = conditions(api, "m")
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("True", "RollingOut")
    assert "1 old replicas pending termination" in conds["Progressing"]["message"]
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("True", "RollingOut")  # model A serves


async def test_progress_deadline_rolls_back_to_the_last_good_model_and_says_why() -> None:
    api = FakeApi()
    api.put("modeldeployments", model_deployment("m", URI_B, serving_a()))
    failed = {
        "observedGeneration": 2,
        "replicas": 2,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
        ],
    }
    api.put("deployments", server("m", URI_B, failed))
    md = reconciler(api)
    await md.reconcile(NS, "m")
    dep = api.one("deployments", NS, "m")
    assert dep["spec"]["template"]["metadata"]["annotations"][MODEL_ANNOTATION] == sha(URI_A)
    assert dep["metadata"]["generation"] == 3
    status = api.one("modeldeployments", NS, "m")["status"]
    assert status["failedModelSha256"] == sha(URI_B) and status["lastGoodModel"] == URI_A
    progressing = conditions(api, "m")["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "RolloutFailed")
    assert (
        URI_B in progressing["message"]
        and f"rolling back to the last good model {URI_A}" in progressing["message"]
    )

    # The stale deadline of generation 2 is not read as a failure of the rollback.
    await md.reconcile(NS, "m")
    assert api.count("patch", "deployments") == 1
    assert api.one("modeldeployments", NS, "m")["status"]["lastGoodModel"] == URI_A
    dep["status"] = complete(3)
    await md.reconcile(NS, "m")
    status = api.one("modeldeployments", NS, "m")["status"]
    assert (status["modelUri"], status["lastGoodModel"]) == (URI_A, URI_A)
    assert conditions(api, "m")["Ready"]["status"] == "True"
    assert conditions(api, "m")["Progressing"]["reason"] == "RolloutFailed"


async def test_a_long_name_gets_valid_children_selectors_and_retraining_runs() -> None:
    name = "1" + "m" * 80  # a valid ModelDeployment name, not a valid Service name
    api = FakeApi()
    drift = {"drift": {"threshold": 0.25, "for": "0s"}}
    api.put(
        "modeldeployments",
        model_deployment(name, URI_A, monitoring=drift, retrain={"pipelineRef": "p", "cooldown": "1h"}),
    )
    md = reconciler(api, drift=0.9)
    await md.reconcile(NS, name)
    (dep,), (svc,) = api.of("deployments"), api.of("services")
    assert dep["metadata"]["name"] == svc["metadata"]["name"]
    assert len(svc["metadata"]["name"]) <= 63 and DNS1035_LABEL.match(svc["metadata"]["name"])
    assert dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == label_value(name)
    assert dep["metadata"]["ownerReferences"][0]["name"] == name
    status = api.one("modeldeployments", NS, name)["status"]
    assert status["endpoint"] == f"http://{svc['metadata']['name']}.{NS}.svc:8000"

    dep["status"] = complete(1)
    await md.reconcile(NS, name)
    (run,) = api.of("pipelineruns")
    assert run["metadata"]["labels"]["conveyor.dev/modeldeployment"] == label_value(name)
    assert api.one("modeldeployments", NS, name)["status"]["lastRetrainRun"] == run["metadata"]["name"]


async def test_a_drift_score_that_is_not_a_number_is_not_written() -> None:
    api = FakeApi()
    monitoring = {"drift": {"threshold": 0.25}}
    api.put(
        "modeldeployments",
        model_deployment("m", URI_A, {**serving_a(), "lastDriftScore": 0.1}, monitoring=monitoring),
    )
    api.put("deployments", server("m", URI_A, complete(2)))
    await reconciler(api, drift=math.nan).reconcile(NS, "m")
    status = api.one("modeldeployments", NS, "m")["status"]
    assert conditions(api, "m")["Ready"]["status"] == "True"
    assert "lastDriftScore" not in status and "driftSince" not in status
