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
from tests.conftest import free_port
from tests.integration.kube.cluster import ApiServer
from tests.integration.kube.conftest import OperatorProcess, create, credentials_secret, wait_for
from tests.integration.kube.kubelet import DeploymentController, Kubelet
from tests.integration.kube.test_operator_runs import breast_cancer

MDS = "conveyor.dev/v1alpha1/modeldeployments"
RUNS = "conveyor.dev/v1alpha1/pipelineruns"


def tunable_pipeline(s3: dict[str, str]) -> dict[str, Any]:
    """The breast-cancer pipeline with its regularisation as a parameter, so a retrain with
    other params makes another model."""
    doc = breast_cancer(s3)
    doc["spec"]["params"].append({"name": "c", "default": "1.0"})
    train = doc["spec"]["stages"][3]["with"]
    train.pop("search")
    train["params"] = {"max_iter": 2000, "C": "$(params.c)"}
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


class FakeDrift:
    """A drift source that says what the test sets (the real one reads the Service's /metrics)."""

    def __init__(self) -> None:
        self.score: float | None = None

    async def __call__(self, namespace: str, name: str) -> float | None:
        return self.score


async def _reconciler(api: ApiServer, s3: dict[str, str], drift: FakeDrift, clock: Any) -> Any:
    from conveyor.kube.client import Connection, KubeClient
    from conveyor.kube.deployments import DeploymentReconciler
    from conveyor.kube.stores import StoreResolver

    settings = Settings(s3_endpoint=s3["endpoint"], credentials_secret="s3-credentials")
    kube = KubeClient(Connection(server=str(api.url).rstrip("/")))
    return DeploymentReconciler(kube, settings, StoreResolver(settings), drift=drift, clock=clock)


async def _mark_ready(api: ApiServer, name: str, failed: bool = False) -> None:
    dep = api.get_object("apps/v1/deployments", "default", name)
    assert dep is not None
    now = "2026-01-01T00:00:00Z"
    conditions = [
        {
            "type": "Available",
            "status": "True",
            "reason": "MinimumReplicasAvailable",
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }
    ]
    if failed:
        conditions.append(
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        )
    ready = 0 if failed else 1
    status = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": 1,
        "updatedReplicas": ready,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": conditions,
    }
    resp = await api.patch(
        f"/apis/apps/v1/namespaces/default/deployments/{name}/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    resp.release()


async def test_rollback_to_the_last_good_model_and_the_daily_cap(api: ApiServer, s3: dict[str, str]) -> None:
    from datetime import UTC, datetime, timedelta

    from conveyor.artifacts.layout import Champion, write_champion
    from conveyor.artifacts.store import S3Store

    store = S3Store(s3["bucket"], "m")
    good = store.write_bytes("default/p/r1/train/model.skops", b"good", "application/x-skops")
    bad = store.write_bytes("default/p/r2/train/model.skops", b"bad", "application/x-skops")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    write_champion(store, "default", "p", Champion(run="r1", model=good, promoted_at=when))
    await create(
        api,
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "stages": [{"name": "a", "image": "x"}],
                "artifacts": {"s3": {"bucket": s3["bucket"], "prefix": "m"}},
            },
        },
    )
    await create(
        api,
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "bc", "namespace": "default"},
            "spec": {
                "model": {"fromPipeline": "p"},
                "monitoring": {"drift": {"threshold": 0.25, "for": "5m"}},
                "retrain": {"pipelineRef": "p", "cooldown": "1m", "maxRunsPerDay": 2},
            },
        },
    )
    clock = {"now": when}
    drift = FakeDrift()
    rec = await _reconciler(api, s3, drift, lambda: clock["now"])
    await rec.reconcile("default", "bc")
    await _mark_ready(api, "bc")
    await rec.reconcile("default", "bc")
    assert md_status(api)["modelUri"] == good.uri and cond(md_status(api), "Ready") == "True"

    # A new champion whose pods never become ready: the deployment goes back to the good one.
    write_champion(store, "default", "p", Champion(run="r2", model=bad, promoted_at=when))
    await rec.reconcile("default", "bc")
    dep = api.get_object("apps/v1/deployments", "default", "bc")
    assert dep is not None and bad.uri in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    await _mark_ready(api, "bc", failed=True)
    await rec.reconcile("default", "bc")
    dep = api.get_object("apps/v1/deployments", "default", "bc")
    assert dep is not None and good.uri in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    st = md_status(api)
    progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "RolloutFailed" and "never became ready" in progressing["message"]
    assert st["failedModelSha256"] == bad.sha256
    await _mark_ready(api, "bc")
    await rec.reconcile("default", "bc")
    assert md_status(api)["modelUri"] == good.uri and cond(md_status(api), "Ready") == "True"

    # Drift must last `for` (5m) before a retrain; then the cooldown and the daily cap apply.
    def drift_runs() -> list[str]:
        return [r["metadata"]["name"] for r in api.objects_of(RUNS)]

    drift.score = 0.4
    await rec.reconcile("default", "bc")
    assert drift_runs() == [] and md_status(api)["driftSince"]
    clock["now"] += timedelta(minutes=6)
    await rec.reconcile("default", "bc")
    assert len(drift_runs()) == 1
    clock["now"] += timedelta(seconds=30)  # within the 1m cooldown: no run; drift counts again from here
    await rec.reconcile("default", "bc")
    assert len(drift_runs()) == 1
    clock["now"] += timedelta(minutes=4)  # drift for 4m < 5m
    await rec.reconcile("default", "bc")
    assert len(drift_runs()) == 1
    clock["now"] += timedelta(minutes=2)  # 6m
    await rec.reconcile("default", "bc")
    assert len(drift_runs()) == 2
    clock["now"] += timedelta(minutes=1)
    await rec.reconcile("default", "bc")
    clock["now"] += timedelta(minutes=6)
    await rec.reconcile("default", "bc")
    assert len(drift_runs()) == 2  # maxRunsPerDay
    assert "maxRunsPerDay" in md_status(api)["lastRetrainReason"]
    drift.score = 0.05
    await rec.reconcile("default", "bc")
    assert "driftSince" not in md_status(api) and md_status(api)["lastDriftScore"] == 0.05
    await rec.kube.close()


async def test_prometheus_operator_objects_only_where_it_is_installed(
    api: ApiServer, s3: dict[str, str]
) -> None:
    import kmock

    md = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "plain", "namespace": "default"},
        "spec": {
            "model": {"uri": f"s3://{s3['bucket']}/m/default/p/r1/train/model.skops"},
            "monitoring": {"drift": {"threshold": 0.3, "for": "5m"}},
        },
    }
    await create(api, md)
    rec = await _reconciler(api, s3, FakeDrift(), lambda: __import__("datetime").datetime.now())
    await rec.reconcile("default", "plain")  # no Prometheus Operator: nothing extra, no failure
    assert api.get_object("apps/v1/deployments", "default", "plain") is not None
    for plural in ("servicemonitors", "prometheusrules"):
        api.resources[f"monitoring.coreos.com/v1/{plural}"] = kmock.ResourceInfo(
            kind={"servicemonitors": "ServiceMonitor", "prometheusrules": "PrometheusRule"}[plural],
            namespaced=True,
            verbs={"get", "list", "create", "patch"},
        )
    await rec.reconcile("default", "plain")
    monitor = api.get_object("monitoring.coreos.com/v1/servicemonitors", "default", "plain")
    rule = api.get_object("monitoring.coreos.com/v1/prometheusrules", "default", "plain")
    assert monitor is not None and monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s"}
    ]
    assert rule is not None
    drift_rule = rule["spec"]["groups"][0]["rules"][0]
    assert (
        drift_rule["expr"] == 'max(conveyor_drift_score{model="plain"}) > 0.3' and drift_rule["for"] == "5m"
    )
    await rec.kube.close()


def test_drift_score_parsing() -> None:
    from conveyor.kube.deployments import drift_score, prometheus_value

    text = (
        '# HELP conveyor_drift_score x\nconveyor_drift_score{model="a",version="r"} 0.31\n'
        'conveyor_drift_score{model="a",version="s"} 0.12\nconveyor_requests_total 3\n'
    )
    assert drift_score(text) == 0.31
    assert drift_score("conveyor_requests_total 3\n") is None
    assert (
        prometheus_value(
            '{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.42"]}]}}'
        )
        == 0.42
    )
    assert prometheus_value('{"status":"success","data":{"resultType":"vector","result":[]}}') is None
