"""Reading a ModelDeployment's drift from its pods: which pods, what each says, and how their
scores are combined (table-driven)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from conveyor.kube.drift import (
    PodDrift,
    Sample,
    combine,
    drift_score,
    pod_sample,
    prometheus_value,
    ready_pods,
)
from tests.unit.kube.fakeapi import FakeApi, FakeClient

HTTP = [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def pod(
    ip: str | None, ready: bool = True, ports: Any = HTTP, terminating: bool = False, **labels: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"pod-{ip}", "namespace": "ml", "labels": labels}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "spec": {"containers": [{"name": "server", "ports": ports}]}, "status": status}


POD_CASES = [
    ("no pods", [], []),
    ("a pod without an IP yet", [pod(None)], []),
    (
        "ready pods, on the port named http",
        [pod("10.0.0.7"), pod("10.0.0.5")],
        ["http://10.0.0.5:8000/metrics", "http://10.0.0.7:8000/metrics"],
    ),
    (
        "not ready and terminating pods are left out",
        [pod("10.0.0.5"), pod("10.0.0.6", ready=False), pod("10.0.0.8", terminating=True)],
        ["http://10.0.0.5:8000/metrics"],
    ),
    (
        "the port is found by name",
        [
            pod(
                "10.0.0.5",
                ports=[{"name": "grpc", "containerPort": 9000}, {"name": "http", "containerPort": 8080}],
            )
        ],
        ["http://10.0.0.5:8080/metrics"],
    ),
    ("no port named http", [pod("10.0.0.5", ports=[{"name": "grpc", "containerPort": 9000}])], []),
    ("IPv6 addresses in brackets", [pod("fd00::5")], ["http://[fd00::5]:8000/metrics"]),
]


@pytest.mark.parametrize(("pods", "urls"), [c[1:] for c in POD_CASES], ids=[c[0] for c in POD_CASES])
def test_ready_pods(pods: list[dict[str, Any]], urls: list[str]) -> None:
    assert ready_pods(pods) == urls


COMBINE_CASES = [
    ("no pod has a score yet", [], None),
    ("one pod", [Sample(0.4, 300)], 0.4),
    ("weighted by rows", [Sample(0.4, 300), Sample(0.1, 100)], 0.325),
    ("a pod that just started counts for little", [Sample(0.3, 1000), Sample(0.9, 10)], (300 + 9) / 1010),
    ("equal windows: the mean", [Sample(0.2, 500), Sample(0.4, 500)], 0.3),
    ("no window size exported: weight 1", [Sample(0.2, 0), Sample(0.4, 0)], 0.3),
    ("a pod's NaN is no measurement", [Sample(math.nan, 100), Sample(0.2, 100)], 0.2),
    ("only NaN: NaN", [Sample(math.nan, 100)], math.nan),
]


@pytest.mark.parametrize(
    ("samples", "score"), [c[1:] for c in COMBINE_CASES], ids=[c[0] for c in COMBINE_CASES]
)
def test_combine(samples: list[Sample], score: float | None) -> None:
    got = combine(samples)
    if score is None or math.isnan(score):
        assert got is score or (got is not None and math.isnan(got))
    else:
        assert got == pytest.approx(score)


METRICS = (
    "# HELP conveyor_drift_score x\n# TYPE conveyor_drift_score gauge\n"
    'conveyor_drift_score{model="a",version="r"} 0.31\n'
    'conveyor_drift_score{model="a",version="s"} 0.12\n'
    'conveyor_drift_window_size{model="a"} 300.0\n'
    "conveyor_requests_total 3\n"
)


def test_drift_score_and_a_pods_sample() -> None:
    assert drift_score(METRICS) == 0.31
    assert drift_score("conveyor_requests_total 3\n") is None
    assert pod_sample(METRICS) == Sample(0.31, 300.0)
    assert pod_sample('conveyor_drift_window_size{model="a"} 40.0\n') is None  # below minSamples
    assert pod_sample(None) is None  # did not answer


def test_prometheus_value() -> None:
    vector = '{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.42"]}]}}'
    assert prometheus_value(vector) == 0.42
    assert prometheus_value('{"status":"success","data":{"resultType":"vector","result":[]}}') is None


async def test_the_reader_asks_every_ready_pod_of_the_model_server() -> None:
    from conveyor.kube.manifests import selector_labels

    api = FakeApi()
    mine = selector_labels("1m")
    for p in (pod("10.0.0.5", **mine), pod("10.0.0.6", ready=False, **mine), pod("10.0.0.7", **mine)):
        api.put("pods", p)
    api.put("pods", pod("10.0.0.9", **{**mine, "app.kubernetes.io/instance": "other"}))
    quiet = 'conveyor_drift_score{model="a",version="r"} 0.03\nconveyor_drift_window_size{model="a"} 100\n'
    pages = {"http://10.0.0.5:8000/metrics": METRICS, "http://10.0.0.7:8000/metrics": quiet}
    asked: list[str] = []

    class Client(FakeClient):
        async def get_text(self, url: str) -> str | None:
            asked.append(url)
            return pages.get(url)

    score = await PodDrift(Client(api))("ml", "1m")
    assert sorted(asked) == sorted(pages)
    assert score == pytest.approx((0.31 * 300 + 0.03 * 100) / 400)
