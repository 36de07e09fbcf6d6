"""The serving loop end to end against the emulator: a ModelDeployment serves a pipeline's
champion (a real `conveyor serve`), drift starts exactly one retraining run, the operator runs
it (the test kubelet executes its stages), and the deployment rolls to the new champion."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from conveyor.kube.settings import Settings
from tests.conftest import EXAMPLES, free_port
from tests.integration.kube.cluster import ApiServer
from tests.integration.kube.conftest import OperatorProcess, create, credentials_secret, wait_for
from tests.integration.kube.kubelet import DeploymentController, Kubelet

MDS = "conveyor.dev/v1alpha1/modeldeployments"
RUNS = "conveyor.dev/v1alpha1/pipelineruns"


def tunable_pipeline(s3: dict[str, str]) -> dict[str, Any]:
    """The breast-cancer pipeline with its regularisation as a parameter, so a retrain with
    other params makes another model."""
    doc = yaml.safe_load((EXAMPLES / "breast-cancer" / "pipeline.yaml").read_text())
    doc["spec"]["params"].append({"name": "c", "default": "1.0"})
    train = doc["spec"]["stages"][3]["with"]
    train.pop("search")
    train["params"] = {"max_iter": 2000, "C": "$(params.c)"}
    doc["spec"]["artifacts"] = {
        "s3": {
            "bucket": s3["bucket"],
            "prefix": "conveyor",
            "endpoint": s3["endpoint"],
            "credentialsSecret": "s3-credentials",
        }
    }
    return doc


def md_status(api: ApiServer) -> dict[str, Any]:
    obj = api.get_object(MDS, "default", "bc") or {}
    return dict(obj.get("status") or {})


def cond(status: dict[str, Any], type_: str) -> str | None:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == type_), None)


def send(port: int, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 50):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=json.dumps({"instances": rows[i : i + 50]}).encode()
        )
        urllib.request.urlopen(req, timeout=10).read()


@pytest_asyncio.fixture
async def serving_operator(api: ApiServer, s3: dict[str, str]) -> Any:
    port = free_port()
    settings = Settings(
        image="conveyor:test",
        resync_seconds=2.0,
        credentials_secret="s3-credentials",
        s3_endpoint=s3["endpoint"],
        namespaces=["default"],
        model_metrics_url=f"http://127.0.0.1:{port}/metrics",
    )
    await credentials_secret(api)
    proc = OperatorProcess(api, settings)
    await proc.start()
    yield proc, port
    await proc.stop()


@pytest.mark.slow
async def test_drift_retrains_and_the_deployment_rolls(
    api: ApiServer, serving_operator: Any, kubelet: Kubelet, s3: dict[str, str], tmp_path: Path
) -> None:
    _operator, port = serving_operator
    pipeline = tunable_pipeline(s3)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    # The first champion, trained by the local executor into the same store.
    subprocess.run(
        [sys.executable, "-m", "conveyor", "run", str(path), "--json"], check=True, capture_output=True
    )
    await create(api, pipeline)
    md = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bc", "namespace": "default"},
        "spec": {
            "model": {"fromPipeline": "breast-cancer"},
            "replicas": 1,
            "monitoring": {"drift": {"threshold": 0.25, "window": 300, "minSamples": 100, "for": "0s"}},
            "retrain": {
                "pipelineRef": "breast-cancer",
                "params": {"c": "0.05"},
                "cooldown": "1h",
                "maxRunsPerDay": 3,
            },
        },
    }
    async with DeploymentController(api, {"bc": port}, base_env=kubelet.base_env) as deployments:
        await create(api, md)
        st = await wait_for(
            lambda: md_status(api) if cond(md_status(api), "Ready") == "True" else None,
            timeout=90,
            what="the ModelDeployment to be Ready",
        )
        first_model = st["modelUri"]
        assert first_model.startswith(f"s3://{s3['bucket']}/conveyor/default/breast-cancer/")
        assert cond(st, "Available") == "True" and st["readyReplicas"] == 1
        assert st["endpoint"] == "http://bc.default.svc:8000"
        assert api.get_object("v1/services", "default", "bc") is not None

        from sklearn.datasets import load_breast_cancer

        x = load_breast_cancer(as_frame=True).frame.drop(columns="target")
        shifted = x.sample(300, random_state=3, replace=True)
        shifted["mean radius"] *= 1.5
        send(port, shifted.to_dict(orient="records"))

        def retrains() -> list[dict[str, Any]]:
            return [
                r
                for r in api.objects_of(RUNS)
                if r["metadata"].get("labels", {}).get("conveyor.dev/trigger") == "drift"
            ]

        runs = await wait_for(retrains, timeout=60, what="a retraining run")
        assert len(runs) == 1 and runs[0]["spec"] == {
            "pipelineRef": {"name": "breast-cancer"},
            "params": {"c": "0.05"},
        }
        st = await wait_for(
            lambda: md_status(api) if md_status(api).get("lastRetrainRun") else None,
            timeout=10,
            what="the status to record the retraining run",
        )
        assert st["lastDriftScore"] > 0.25 and st["lastRetrainRun"] == runs[0]["metadata"]["name"]
        assert "drift" in st["lastRetrainReason"]

        def finished() -> dict[str, Any] | None:
            run = api.get_object(RUNS, "default", runs[0]["metadata"]["name"]) or {}
            status = run.get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed") else None

        run_status = await wait_for(finished, timeout=120, what="the retraining run to finish")
        assert run_status["phase"] == "Succeeded", run_status
        assert run_status["model"]["promoted"] is True
        new_model = run_status["model"]["uri"]
        assert new_model != first_model
        st = await wait_for(
            lambda: (
                md_status(api)
                if md_status(api).get("modelUri") == new_model and cond(md_status(api), "Ready") == "True"
                else None
            ),
            timeout=60,
            what="the deployment to serve the new champion",
        )
        assert deployments.rollouts == ["bc", "bc"]
        body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/breast-cancer").read())
        assert body["versions"] == [run_status["model"]["uri"].split("/")[-3]]
        assert len(retrains()) == 1  # the cooldown holds
