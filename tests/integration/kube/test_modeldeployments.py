"""ModelDeployments on the real control plane: the Deployment and ReplicaSet controllers roll
the model server out, the process kubelet runs `conveyor serve` in every pod (readiness from
its /v2/health/ready), the operator reads drift from every ready pod; a retraining run's stages
run as Jobs and its champion rolls out."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from conveyor.artifacts import layout
from conveyor.artifacts.store import S3Store
from conveyor.engine.invocation import ArtifactRef
from tests.cluster.api import Api
from tests.integration.kube.conftest import (
    GROUP_PATH,
    OperatorProcess,
    create,
    get,
    items,
    wait_for,
)
from tests.integration.kube.runs_helpers import breast_cancer

PIPELINE = "breast-cancer"
SERVER = "bc"  # the ModelDeployment, its Deployment and Service
PODS = "app.kubernetes.io/instance=bc,app.kubernetes.io/component=model-server"
MODEL_ANNOTATION = "conveyor.dev/model-sha256"


def tunable_pipeline(s3: dict[str, str], ns: str) -> dict[str, Any]:
    """The breast-cancer pipeline with its regularisation as a parameter (a retrain with other
    params makes another model), in the test's namespace."""
    doc = breast_cancer(s3)
    doc["metadata"]["namespace"] = ns
    doc["spec"]["params"].append({"name": "c", "default": "1.0"})
    train = doc["spec"]["stages"][3]["with"]
    train.pop("search")
    train["params"] = {"max_iter": 2000, "C": "$(params.c)"}
    return doc


async def train(pipeline: dict[str, Any], tmp_path: Path, *params: str) -> dict[str, Any]:
    """A run of the pipeline by the local executor, into the same store the cluster reads."""
    path = tmp_path / f"pipeline-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    argv = [sys.executable, "-m", "conveyor", "run", str(path), "--json", "--allow-rejected"]
    for p in params:
        argv += ["-p", p]
    proc = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record: dict[str, Any] = json.loads(proc.stdout)
    assert record["phase"] == "Succeeded", record
    return record


def model_deployment(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": SERVER},
        "spec": {"model": {"fromPipeline": PIPELINE}, "replicas": 1, **spec},
    }


async def md_status(kube: Api, ns: str) -> dict[str, Any]:
    obj = await get(kube, "modeldeployments", ns, SERVER) or {}
    return dict(obj.get("status") or {})


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


async def serving(kube: Api, ns: str, model_uri: str) -> dict[str, Any] | None:
    """The status once the deployment is Ready, its rollout complete, serving `model_uri`."""
    st = await md_status(kube, ns)
    done = cond(st, "Progressing").get("reason") in ("Succeeded", "RolloutFailed")
    ok = st.get("modelUri") == model_uri and cond(st, "Ready").get("status") == "True" and done
    return st if ok else None


def is_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


async def model_pods(kube: Api, ns: str) -> list[dict[str, Any]]:
    return await items(kube, "pods", ns, PODS)


async def only_pod(kube: Api, ns: str) -> dict[str, Any] | None:
    """The one model-server pod, once it is Ready and no other is left."""
    pods = await model_pods(kube, ns)
    return pods[0] if len(pods) == 1 and is_ready(pods[0]) else None


async def pod_get(pod: dict[str, Any], path: str) -> Any:
    """GET from a pod on its IP (the process kubelet's pods share this host's network)."""
    url = f"http://{pod['status']['podIP']}:8000{path}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.get(url) as r:
        assert r.status == 200, (url, r.status, await r.text())
        return await r.json()


async def served_version(pod: dict[str, Any]) -> str:
    body = await pod_get(pod, f"/v2/models/{PIPELINE}")
    return str(body["versions"][0])


def template_model(dep: dict[str, Any]) -> str:
    return str(dep["spec"]["template"]["metadata"]["annotations"][MODEL_ANNOTATION])


@pytest.mark.slow
async def test_serves_the_champion_then_rolls_to_a_new_one(
    kube: Api, ns: str, model_operator: OperatorProcess, s3: dict[str, str], tmp_path: Path
) -> None:
    pipeline = tunable_pipeline(s3, ns)
    first = await train(pipeline, tmp_path)
    assert first["model"]["promoted"] is True
    await create(kube, pipeline, ns)
    await create(kube, model_deployment(), ns)
    st = await wait_for(lambda: serving(kube, ns, first["model"]["uri"]), 120, "the first model to serve")
    assert (st["modelVersion"], st["readyReplicas"], st["lastGoodModel"]) == (
        first["run"],
        1,
        first["model"]["uri"],
    )
    assert st["lastGoodSha256"] == first["model"]["sha256"] and "failedModelSha256" not in st
    assert cond(st, "Available")["status"] == "True" and st["endpoint"] == f"http://{SERVER}.{ns}.svc:8000"
    dep = await get(kube, "deployments", ns, SERVER)
    assert dep is not None and template_model(dep) == first["model"]["sha256"]
    (rs,) = await items(kube, "replicasets", ns, PODS)
    assert rs["metadata"]["ownerReferences"][0]["name"] == SERVER
    old = await wait_for(lambda: only_pod(kube, ns), 30, "one ready pod")
    assert old["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]
    assert first["model"]["uri"] in old["spec"]["containers"][0]["args"]
    assert await served_version(old) == first["run"]
    svc = await get(kube, "services", ns, SERVER)
    assert svc is not None and svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]

    # A new champion (the local executor promotes it; the operator finds it on its next look).
    second = await train(pipeline, tmp_path, "c=0.05")
    assert second["model"]["promoted"] is True and second["model"]["sha256"] != first["model"]["sha256"]
    st = await wait_for(lambda: serving(kube, ns, second["model"]["uri"]), 180, "the new model to serve")
    assert (st["modelVersion"], st["lastGoodModel"]) == (second["run"], second["model"]["uri"])
    assert cond(st, "Progressing")["reason"] == "Succeeded"
    dep = await get(kube, "deployments", ns, SERVER)
    assert dep is not None and template_model(dep) == second["model"]["sha256"]
    assert dep["metadata"]["generation"] == 2 and dep["status"]["observedGeneration"] == 2
    sets = {r["metadata"]["name"]: r for r in await items(kube, "replicasets", ns, PODS)}
    assert len(sets) == 2 and sets[rs["metadata"]["name"]]["spec"]["replicas"] == 0
    new = await wait_for(lambda: only_pod(kube, ns), 60, "the old pod to be terminated")
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    assert new["metadata"]["ownerReferences"][0]["name"] != rs["metadata"]["name"]
    assert await served_version(new) == second["run"]


@pytest.mark.slow
async def test_a_model_that_never_becomes_ready_leaves_the_old_one_serving(
    kube: Api, ns: str, model_operator: OperatorProcess, s3: dict[str, str], tmp_path: Path
) -> None:
    pipeline = tunable_pipeline(s3, ns)
    good_run = await train(pipeline, tmp_path)
    good = good_run["model"]
    await create(kube, pipeline, ns)
    await create(kube, model_deployment(rollout={"progressDeadlineSeconds": 10}), ns)
    await wait_for(lambda: serving(kube, ns, good["uri"]), 120, "the good model to serve")
    old = await wait_for(lambda: only_pod(kube, ns), 30, "one ready pod")

    # A model that fails its gate (so it is not promoted), its files (model.skops and the
    # model.onnx the server prefers) changed after training, then made the champion:
    # `conveyor serve` refuses a file whose digest is not the recorded one.
    bad_run = await train(pipeline, tmp_path, "c=0.05", "min-accuracy=1.01")
    bad = bad_run["model"]
    assert bad["promoted"] is False
    store = S3Store(s3["bucket"], "conveyor")
    key = store.key(bad["uri"])
    store.write_bytes(key, store.read_bytes(key) + b"\0", "application/x-skops")
    onnx = key.rpartition("/")[0] + "/model.onnx"
    store.write_bytes(onnx, store.read_bytes(onnx) + b"\0", "application/onnx")
    ref = ArtifactRef(uri=bad["uri"], sha256=bad["sha256"], bytes=1)
    champion = layout.Champion(run=bad_run["run"], model=ref, promoted_at=datetime.now(UTC))
    layout.write_champion(store, ns, PIPELINE, champion)

    seen: list[str] = []  # every Progressing message the operator wrote, from a watch
    ready: set[str] = set()  # every status of its Ready condition
    bad_pods: dict[str, bool] = {}  # pods of the bad model: ever Ready?

    async def record(_: str, md: dict[str, Any]) -> None:
        message = cond(md.get("status") or {}, "Progressing").get("message")
        if message and (not seen or seen[-1] != message):
            seen.append(message)
        ready.add(cond(md.get("status") or {}, "Ready").get("status", "?"))

    async def record_pod(_: str, pod: dict[str, Any]) -> None:
        if bad["uri"] in pod["spec"]["containers"][0]["args"]:
            uid = pod["metadata"]["uid"]
            bad_pods[uid] = bad_pods.get(uid, False) or is_ready(pod)

    watches = [
        asyncio.create_task(kube.watch(f"{GROUP_PATH}/namespaces/{ns}/modeldeployments", {}, record)),
        asyncio.create_task(kube.watch(f"/api/v1/namespaces/{ns}/pods", {"labelSelector": PODS}, record_pod)),
    ]

    async def rolled_back() -> dict[str, Any] | None:
        st = await md_status(kube, ns)
        done = (
            cond(st, "Progressing").get("message", "").endswith(f"serving the last good model {good['uri']}")
        )
        return st if done and await serving(kube, ns, good["uri"]) else None

    st = await wait_for(rolled_back, 180, "the rollout to fail and the good model to serve again")
    for watch in watches:
        watch.cancel()
    assert ready == {"True"}  # the old model's pod served throughout
    assert len(bad_pods) == 1 and not any(bad_pods.values())  # the new one's never became ready
    failed = f"model {bad['uri']} did not become ready within the Deployment's progress deadline"
    i = seen.index(f"rolling out model {bad['uri']}")
    assert all(m.startswith(f"rolling out model {bad['uri']}: ") for m in seen[i + 1 : -2]), seen
    assert seen[-2:] == [
        f"{failed} (ProgressDeadlineExceeded); rolling back to the last good model {good['uri']}",
        f"{failed} (ProgressDeadlineExceeded); serving the last good model {good['uri']}",
    ], seen
    assert cond(st, "Progressing")["status"] == "False" and cond(st, "Ready")["status"] == "True"
    assert st["failedModelSha256"] == bad["sha256"]
    assert (st["lastGoodModel"], st["lastGoodSha256"]) == (good["uri"], good["sha256"])
    dep = await get(kube, "deployments", ns, SERVER)
    assert dep is not None and template_model(dep) == good["sha256"]
    pod = await wait_for(lambda: only_pod(kube, ns), 60, "the failing pod to be removed")
    assert pod["metadata"]["uid"] == old["metadata"]["uid"]  # the old pod served all along
    assert await served_version(pod) == good_run["run"]


async def send(pod: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Requests straight to a pod (there is no kube-proxy here; a client would use the Service)."""
    url = f"http://{pod['status']['podIP']}:8000/predict"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for i in range(0, len(rows), 50):
            async with http.post(url, json={"instances": rows[i : i + 50]}) as resp:
                assert resp.status == 200, await resp.text()


def shifted_traffic() -> list[dict[str, Any]]:
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    shifted = x.sample(300, random_state=3, replace=True)
    shifted["mean radius"] *= 1.5
    return list(shifted.to_dict(orient="records"))


async def retrains(kube: Api, ns: str) -> list[dict[str, Any]]:
    return await items(kube, "pipelineruns", ns, "conveyor.dev/trigger=drift")


async def pod_drift(pod: dict[str, Any]) -> float | None:
    url = f"http://{pod['status']['podIP']}:8000/metrics"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.get(url) as r:
        text = await r.text()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("conveyor_drift_score{")
    ]
    return max(values) if values else None


@pytest.mark.slow
async def test_drift_starts_one_retraining_run_whose_model_is_then_served(
    kube: Api, ns: str, model_operator: OperatorProcess, s3: dict[str, str], tmp_path: Path
) -> None:
    pipeline = tunable_pipeline(s3, ns)
    first = await train(pipeline, tmp_path)
    await create(kube, pipeline, ns)
    md = model_deployment(
        monitoring={"drift": {"threshold": 0.25, "window": 300, "minSamples": 100, "for": "0s"}},
        retrain={"pipelineRef": PIPELINE, "params": {"c": "0.05"}, "cooldown": "1h", "maxRunsPerDay": 3},
    )
    await create(kube, md, ns)
    await wait_for(lambda: serving(kube, ns, first["model"]["uri"]), 120, "the first model to serve")
    old = await wait_for(lambda: only_pod(kube, ns), 30, "one ready pod")

    assert await retrains(kube, ns) == [] and "lastDriftScore" not in await md_status(kube, ns)

    await send(old, shifted_traffic())
    (run,) = await wait_for(lambda: retrains(kube, ns), 60, "a retraining run")
    assert run["spec"] == {"pipelineRef": {"name": PIPELINE}, "params": {"c": "0.05"}, "cancelled": False}
    assert run["metadata"]["labels"]["conveyor.dev/modeldeployment"] == SERVER
    name = run["metadata"]["name"]

    async def recorded() -> dict[str, Any] | None:  # the run is created, then the status written
        st = await md_status(kube, ns)
        return st if st.get("lastRetrainRun") == name else None

    st = await wait_for(recorded, 30, "the status to record the retraining run")
    assert st["lastDriftScore"] > 0.25
    assert st["lastRetrainReason"].startswith("drift ") and "> 0.25 (psi) for 0s" in st["lastRetrainReason"]
    score = await pod_drift(old)  # what the one pod says is what the status says
    assert score is not None and score > 0.25

    async def status_says(value: float) -> bool:
        return (await md_status(kube, ns)).get("lastDriftScore") == round(value, 4)

    await wait_for(lambda: status_says(score), 30, "the status to show the pod's drift score")

    async def run_finished() -> dict[str, Any] | None:
        obj = await get(kube, "pipelineruns", ns, name) or {}
        status = obj.get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    run_status = await wait_for(run_finished, 300, "the retraining run to finish")
    assert run_status["phase"] == "Succeeded", run_status
    assert run_status["model"]["promoted"] is True
    new_model = run_status["model"]["uri"]
    assert new_model.startswith(f"s3://{s3['bucket']}/conveyor/{ns}/{PIPELINE}/{name}/train/")
    assert {j["metadata"]["name"] for j in await items(kube, "jobs", ns)} >= {
        f"{name}-train",
        f"{name}-evaluate",
    }
    st = await wait_for(lambda: serving(kube, ns, new_model), 120, "the new champion to serve")
    assert st["modelVersion"] == name and st["lastGoodModel"] == new_model
    new = await wait_for(lambda: only_pod(kube, ns), 60, "the old pod to be terminated")
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    assert await served_version(new) == name
    assert [r["metadata"]["name"] for r in await retrains(kube, ns)] == [name]  # the cooldown held
