"""Reading a ModelDeployment's drift from its pods or from Prometheus: which pods, what each
says, and how their scores are combined (table-driven)."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from conveyor.kube.client import PODS, Resource
from conveyor.kube.drift import (
    PodDrift,
    PrometheusDrift,
    Sample,
    combine,
    drift_query,
    drift_reader,
    drift_score,
    pod_sample,
    prometheus_samples,
    ready_pods,
)
from conveyor.kube.manifests import model_server_name, selector_labels
from conveyor.kube.settings import Settings

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


def series(name: str, value: str, **labels: str) -> dict[str, Any]:
    return {"metric": {"__name__": name, **labels}, "value": [1767268800.0, value]}


def answer(*result: dict[str, Any], status: str = "success") -> str:
    return json.dumps({"status": status, "data": {"resultType": "vector", "result": list(result)}})


SCORE, ROWS = "conveyor_drift_score", "conveyor_drift_window_size"
PROMETHEUS_CASES = [
    ("no series", answer(), []),
    ("one pod", answer(series(SCORE, "0.4", pod="a"), series(ROWS, "300", pod="a")), [Sample(0.4, 300)]),
    (
        "per pod, as pod_sample: the worst score, the rows of all windows (workers)",
        answer(
            series(SCORE, "0.31", pod="a", pid="1"),
            series(SCORE, "0.12", pod="a", pid="2"),
            series(ROWS, "200", pod="a", pid="1"),
            series(ROWS, "100", pod="a", pid="2"),
            series(SCORE, "0.03", pod="b"),
            series(ROWS, "100", pod="b"),
        ),
        [Sample(0.31, 300), Sample(0.03, 100)],
    ),
    ("a pod without a score yet is left out", answer(series(ROWS, "40", pod="a")), []),
    ("no window size: no rows", answer(series(SCORE, "0.2", pod="a")), [Sample(0.2, 0)]),
    (
        "without a pod label: by instance",
        answer(series(SCORE, "0.2", instance="10.0.0.5:8000")),
        [Sample(0.2, 0)],
    ),
    ("an error answer", answer(series(SCORE, "0.2", pod="a"), status="error"), []),
    ("not JSON", "<html>proxy error</html>", []),
]


@pytest.mark.parametrize(
    ("body", "samples"), [c[1:] for c in PROMETHEUS_CASES], ids=[c[0] for c in PROMETHEUS_CASES]
)
def test_prometheus_samples(body: str, samples: list[Sample]) -> None:
    assert prometheus_samples(body) == samples


def test_prometheus_nan_is_read_as_nan() -> None:
    (sample,) = prometheus_samples(answer(series(SCORE, "NaN", pod="a")))
    assert math.isnan(sample.score)


def test_the_query_selects_the_model_servers_series_by_the_service_monitors_labels() -> None:
    assert drift_query("ml", "bc") == (
        '{__name__=~"conveyor_drift_score|conveyor_drift_window_size",namespace="ml",service="bc"}'
    )


async def test_the_prometheus_reader_asks_one_instant_query_and_combines_per_pod() -> None:
    asked: list[str] = []
    body = answer(
        series(SCORE, "0.31", pod="a"),
        series(ROWS, "300", pod="a"),
        series(SCORE, "0.03", pod="b"),
        series(ROWS, "100", pod="b"),
    )

    async def get_text(url: str) -> str | None:
        asked.append(url)
        return body

    name = "1" + "m" * 80  # not a Service name: its Service has a shortened one
    score = await PrometheusDrift("http://prometheus:9090/", get_text)("ml", name)
    assert score == pytest.approx((0.31 * 300 + 0.03 * 100) / 400)
    (url,) = asked
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("prometheus:9090", "/api/v1/query")
    (query,) = parse_qs(parts.query)["query"]
    assert query == drift_query("ml", model_server_name(name)) and model_server_name(name) != name


async def test_the_prometheus_reader_without_an_answer_has_no_score() -> None:
    async def get_text(url: str) -> str | None:
        return None

    assert await PrometheusDrift("http://prometheus:9090", get_text)("ml", "m") is None


METRICS_QUIET = (
    'conveyor_drift_score{model="a",version="r"} 0.03\nconveyor_drift_window_size{model="a"} 100\n'
)


class PodsClient:
    """What PodDrift uses of the API client: a pod list (the API server selects) and GETs."""

    def __init__(self, pods: list[dict[str, Any]], pages: dict[str, str]) -> None:
        self.pods, self.pages = pods, pages
        self.selectors: list[tuple[Resource, str, dict[str, str]]] = []
        self.asked: list[str] = []

    async def list(self, res: Resource, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        self.selectors.append((res, namespace, labels))
        return self.pods

    async def get_text(self, url: str) -> str | None:
        self.asked.append(url)
        return self.pages.get(url)


async def test_the_pod_reader_asks_every_ready_pod_of_the_model_server() -> None:
    pods = [pod("10.0.0.5"), pod("10.0.0.6", ready=False), pod("10.0.0.7")]
    pages = {"http://10.0.0.5:8000/metrics": METRICS, "http://10.0.0.7:8000/metrics": METRICS_QUIET}
    client = PodsClient(pods, pages)
    score = await PodDrift(client)("ml", "1m")  # type: ignore[arg-type]
    assert client.selectors == [(PODS, "ml", selector_labels("1m"))]
    assert sorted(client.asked) == sorted(pages)
    assert score == pytest.approx((0.31 * 300 + 0.03 * 100) / 400)


def test_prometheus_is_read_when_the_operator_is_given_one() -> None:
    client = PodsClient([], {})
    assert isinstance(drift_reader(client, Settings()), PodDrift)  # type: ignore[arg-type]
    reader = drift_reader(client, Settings(prometheus_url="http://prometheus:9090"))  # type: ignore[arg-type]
    assert isinstance(reader, PrometheusDrift) and reader.url == "http://prometheus:9090"
