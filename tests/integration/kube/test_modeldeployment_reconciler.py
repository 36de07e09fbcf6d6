"""The ModelDeployment reconciler driven directly against the real API server, as the chart's
ServiceAccount, with an injected clock and drift source: how long drift must last, the
cooldown and the daily cap of retraining runs; the Prometheus Operator's objects only where
its CRDs are installed. The real Deployment controller reports the rollouts (of zero replicas:
no pod is needed to decide about drift)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio

from conveyor.engine.names import label_value
from conveyor.kube.client import KubeClient
from conveyor.kube.credentials import Connection
from conveyor.kube.reconcilers.modeldeployment import ModelDeploymentReconciler
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver
from tests.cluster.api import Api
from tests.cluster.cluster import CREDENTIALS_SECRET
from tests.integration.kube.conftest import GROUP_PATH, create, get, items, merge_patch, wait_for

MONITORING = "/apis/monitoring.coreos.com/v1"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


class Clock:
    """Starts at the real time: the API server stamps creationTimestamp with it, and the daily
    cap counts the runs created in the 24 hours before the reconciler's `now`."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class FakeDrift:
    """A drift source that says what the test sets (the operator's reads the pods' /metrics)."""

    def __init__(self) -> None:
        self.score: float | None = None

    async def __call__(self, namespace: str, name: str) -> float | None:
        return self.score


@pytest_asyncio.fixture
async def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def drift() -> FakeDrift:
    return FakeDrift()


@pytest_asyncio.fixture
async def rec(
    kube: Api, ns: str, s3: dict[str, str], clock: Clock, drift: FakeDrift
) -> AsyncIterator[ModelDeploymentReconciler]:
    # Right after the chart's CRDs are installed their storage may still be initializing (a 429
    # that client-go would retry): wait for it, as no operator is started here to do so.
    for plural in ("modeldeployments", "pipelineruns"):
        path = f"{GROUP_PATH}/namespaces/{ns}/{plural}"
        await wait_for(lambda p=path: kube.call("GET", p, ok=(429,)), 30, f"{plural} storage", interval=0.25)
    settings = Settings(
        s3_endpoint=s3["endpoint"],
        credentials_secret=CREDENTIALS_SECRET,
        read_only_credentials_secret=CREDENTIALS_SECRET,
    )
    client = KubeClient(Connection.from_environment())  # the operator's identity
    yield ModelDeploymentReconciler(client, settings, StoreResolver(settings), drift=drift, clock=clock)
    await client.close()


def model_deployment(name: str, s3: dict[str, str], **spec: Any) -> dict[str, Any]:
    uri = f"s3://{s3['bucket']}/m/ml/p/r1/train/model.skops"
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": uri}, "replicas": 0, **spec},
    }


async def md_status(kube: Api, ns: str, name: str) -> dict[str, Any]:
    obj = await get(kube, "modeldeployments", ns, name) or {}
    return dict(obj.get("status") or {})


def cond(status: dict[str, Any], type_: str) -> str | None:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == type_), None)


async def until_ready(kube: Api, ns: str, name: str, rec: ModelDeploymentReconciler) -> None:
    """Reconcile until the Deployment controller has rolled the Deployment out."""

    async def ready() -> bool:
        await rec.reconcile(ns, name)
        return cond(await md_status(kube, ns, name), "Ready") == "True"

    await wait_for(ready, 30, f"{name} to be Ready", interval=0.5)


async def test_drift_must_last_then_the_cooldown_and_the_daily_cap_hold(
    kube: Api, ns: str, s3: dict[str, str], rec: ModelDeploymentReconciler, clock: Clock, drift: FakeDrift
) -> None:
    spec = {
        "monitoring": {"drift": {"threshold": 0.25, "for": "5m"}},
        "retrain": {"pipelineRef": "p", "params": {"c": "0.5"}, "cooldown": "1m", "maxRunsPerDay": 2},
    }
    await create(kube, model_deployment("bc", s3, **spec), ns)
    await until_ready(kube, ns, "bc", rec)

    async def runs() -> list[dict[str, Any]]:
        return await items(kube, "pipelineruns", ns, "conveyor.dev/modeldeployment=bc")

    drift.score = 0.4
    await rec.reconcile(ns, "bc")
    st = await md_status(kube, ns, "bc")
    assert await runs() == [] and st["driftSince"] and st["lastDriftScore"] == 0.4
    clock.now += timedelta(minutes=6)  # over threshold for 6m > 5m
    await rec.reconcile(ns, "bc")
    (run,) = await runs()
    assert run["metadata"]["name"] == "bc-retrain-" + clock.now.strftime("%Y%m%d%H%M%S")
    assert run["metadata"]["labels"]["conveyor.dev/trigger"] == "drift"
    assert run["spec"] == {"pipelineRef": {"name": "p"}, "params": {"c": "0.5"}, "cancelled": False}
    reason = "drift 0.400 > 0.25 (psi) for 5m"
    assert run["metadata"]["annotations"]["conveyor.dev/trigger-reason"] == reason
    st = await md_status(kube, ns, "bc")
    assert (st["lastRetrainRun"], st["lastRetrainReason"]) == (run["metadata"]["name"], reason)
    assert "driftSince" not in st

    clock.now += timedelta(seconds=30)  # within the 1m cooldown: no run; drift counts again from here
    await rec.reconcile(ns, "bc")
    clock.now += timedelta(minutes=4)  # drift for 4m < 5m
    await rec.reconcile(ns, "bc")
    assert len(await runs()) == 1
    clock.now += timedelta(minutes=2)  # 6m
    await rec.reconcile(ns, "bc")
    assert len(await runs()) == 2
    clock.now += timedelta(minutes=1)
    await rec.reconcile(ns, "bc")
    clock.now += timedelta(minutes=6)  # over for 6m, out of the cooldown, but 2 runs today
    await rec.reconcile(ns, "bc")
    assert len(await runs()) == 2
    assert "reached maxRunsPerDay" in (await md_status(kube, ns, "bc"))["lastRetrainReason"]

    drift.score = 0.05
    await rec.reconcile(ns, "bc")
    st = await md_status(kube, ns, "bc")
    assert "driftSince" not in st and st["lastDriftScore"] == 0.05
    events = [e["reason"] for e in await items(kube, "events", ns) if e["involvedObject"]["name"] == "bc"]
    assert events.count("DriftDetected") == 2


async def test_a_long_name_gets_valid_children_an_endpoint_and_retraining_runs(
    kube: Api, ns: str, s3: dict[str, str], rec: ModelDeploymentReconciler, drift: FakeDrift
) -> None:
    name = "1" + "m" * 80  # a valid ModelDeployment name, not a valid Service name
    spec = {"monitoring": {"drift": {"threshold": 0.25, "for": "0s"}}, "retrain": {"pipelineRef": "p"}}
    await create(kube, model_deployment(name, s3, **spec), ns)
    drift.score = 0.9
    await until_ready(kube, ns, name, rec)
    (dep,) = await items(kube, "deployments", ns, f"app.kubernetes.io/instance={label_value(name)}")
    server = dep["metadata"]["name"]
    assert len(server) <= 63 and server[0].isalpha() and await get(kube, "services", ns, server) is not None
    st = await md_status(kube, ns, name)
    assert st["endpoint"] == f"http://{server}.{ns}.svc:8000"
    (run,) = await items(kube, "pipelineruns", ns, f"conveyor.dev/modeldeployment={label_value(name)}")
    assert st["lastRetrainRun"] == run["metadata"]["name"] and len(run["metadata"]["name"]) <= 63


def crd(plural: str, kind: str) -> dict[str, Any]:
    """A minimal CRD of the Prometheus Operator's (its real ones are much larger)."""
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


@contextlib.asynccontextmanager
async def prometheus_operator_crds(kube: Api) -> AsyncIterator[None]:
    """ServiceMonitor and PrometheusRule CRDs, for a while: CRDs are cluster-wide and the
    cluster is the whole session's, so they are gone again before the next test starts."""
    names = [("servicemonitors", "ServiceMonitor"), ("prometheusrules", "PrometheusRule")]
    try:
        for plural, kind in names:
            await kube.call("POST", CRDS, crd(plural, kind))

        async def served() -> bool:
            group = await kube.call("GET", MONITORING, ok=(404, 503)) or {}
            return {r["name"] for r in group.get("resources", [])} >= {p for p, _ in names}

        await wait_for(served, 60, "the API server to serve monitoring.coreos.com/v1", interval=0.25)
        yield
    finally:
        for plural, _ in names:
            await kube.call("DELETE", f"{CRDS}/{plural}.monitoring.coreos.com", ok=(404,))

        async def gone() -> bool:
            crds = [await kube.call("GET", f"{CRDS}/{p}.monitoring.coreos.com", ok=(404,)) for p, _ in names]
            return crds == [None, None] and await kube.call("GET", MONITORING, ok=(404, 503)) is None

        await wait_for(gone, 90, "the monitoring CRDs to be deleted", interval=0.25)


async def test_prometheus_operator_objects_only_where_it_is_installed(
    kube: Api, ns: str, s3: dict[str, str], rec: ModelDeploymentReconciler
) -> None:
    md = model_deployment("plain", s3, monitoring={"drift": {"threshold": 0.3, "for": "5m"}})
    await create(kube, md, ns)
    await rec.reconcile(ns, "plain")  # no Prometheus Operator: nothing extra, no failure
    assert await get(kube, "deployments", ns, "plain") is not None
    assert await kube.call("GET", MONITORING, ok=(404,)) is None

    async with prometheus_operator_crds(kube):  # now it is installed
        await rec.reconcile(ns, "plain")
        monitor = await kube.call("GET", f"{MONITORING}/namespaces/{ns}/servicemonitors/plain")
        assert monitor["metadata"]["ownerReferences"][0]["name"] == "plain"
        assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
        service = await get(kube, "services", ns, "plain")
        assert (
            service is not None and monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
        )
        rule = await kube.call("GET", f"{MONITORING}/namespaces/{ns}/prometheusrules/plain")
        drift_rule = rule["spec"]["groups"][0]["rules"][0]
        assert drift_rule["expr"] == 'max(conveyor_drift_score{model="plain"}) > 0.3'
        assert drift_rule["for"] == "5m"

        changed = copy.deepcopy(md["spec"]["monitoring"])
        changed["drift"]["threshold"] = 0.4
        await merge_patch(kube, "modeldeployments", ns, "plain", {"spec": {"monitoring": changed}})
        await rec.reconcile(ns, "plain")  # the rule exists: patched (the chart's Role allows it)
        rule = await kube.call("GET", f"{MONITORING}/namespaces/{ns}/prometheusrules/plain")
        assert rule["spec"]["groups"][0]["rules"][0]["expr"].endswith(" > 0.4")
