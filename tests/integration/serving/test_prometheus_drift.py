"""The operator's Prometheus drift reader against a real Prometheus: model-server "pods" (small
HTTP servers exposing the drift series as `conveyor serve` does) are scraped with the target
labels a ServiceMonitor gives them (namespace, service, pod, ...); `PrometheusDrift` reads the
ModelDeployment's drift and gets the number `PodDrift` computes from the same pods' /metrics."""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conveyor.kube.client import KubeClient
from conveyor.kube.credentials import Connection
from conveyor.kube.drift import PrometheusDrift, combine, drift_reader, pod_sample
from conveyor.kube.settings import Settings
from tests.integration.serving.test_prometheus import pytestmark as needs_prometheus
from tests.integration.serving.test_prometheus import wait_http

pytestmark = needs_prometheus


def exposition(*series: tuple[str, dict[str, str], str]) -> str:
    lines = [
        "# HELP conveyor_drift_score The largest feature drift (the configured method).",
        "# TYPE conveyor_drift_score gauge",
        "# HELP conveyor_drift_window_size Rows in the drift window.",
        "# TYPE conveyor_drift_window_size gauge",
    ]
    for name, labels, value in series:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {value}")
    return "\n".join(lines) + "\n"


def score(value: str, **labels: str) -> tuple[str, dict[str, str], str]:
    return "conveyor_drift_score", {"model": "bc", "version": "r1", **labels}, value


def rows(value: str, **labels: str) -> tuple[str, dict[str, str], str]:
    return "conveyor_drift_window_size", {"model": "bc", **labels}, value


# (namespace, service, pod) -> its /metrics
PODS: dict[tuple[str, str, str], str] = {
    # two workers (`conveyor serve --workers 2`): the worst score, the rows of both windows
    ("ml", "bc", "bc-7d9f-a"): exposition(
        score("0.5", pid="1"), score("0.2", pid="2"), rows("200", pid="1"), rows("100", pid="2")
    ),
    ("ml", "bc", "bc-7d9f-b"): exposition(score("0.1"), rows("100")),
    ("ml", "bc", "bc-7d9f-c"): exposition(rows("40")),  # too few rows for a score yet
    ("ml", "bc", "bc-7d9f-d"): exposition(score("NaN"), rows("100")),  # a constant column
    ("ml", "other", "other-5c4b-a"): exposition(score("0.9"), rows("1000")),  # another deployment
    ("staging", "bc", "bc-6f8e-a"): exposition(score("0.9"), rows("1000")),  # bc in another namespace
    ("ml", "constant", "constant-1a2b-a"): exposition(score("NaN"), rows("500")),
}


class Pods:
    """One HTTP server per pod, on loopback, serving its /metrics."""

    def __init__(self, pages: dict[tuple[str, str, str], str]) -> None:
        self.servers: dict[tuple[str, str, str], ThreadingHTTPServer] = {}
        for key, text in pages.items():
            body = text.encode()

            class Metrics(BaseHTTPRequestHandler):
                def do_GET(self, body: bytes = body) -> None:
                    self.send_response(200 if self.path == "/metrics" else 404)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args: Any) -> None:
                    pass

            server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers[key] = server

    def url(self, key: tuple[str, str, str]) -> str:
        return f"http://127.0.0.1:{self.servers[key].server_port}/metrics"

    def scrape_config(self) -> str:
        """The targets of a ServiceMonitor's job, labelled as the Prometheus Operator labels them."""
        groups = []
        for (namespace, service, pod), server in self.servers.items():
            labels = {
                "namespace": namespace,
                "service": service,
                "pod": pod,
                "container": "server",
                "endpoint": "http",
            }
            groups.append({"targets": [f"127.0.0.1:{server.server_port}"], "labels": labels})
        job = {"job_name": "serviceMonitor/ml/bc/0", "static_configs": groups}
        return json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]})

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Pods]]:
    from tests.conftest import free_port

    pods = Pods(PODS)
    config = tmp_path / "prometheus.yml"
    config.write_text(pods.scrape_config())  # JSON is YAML
    port = free_port()
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", proc)
        yield url, pods
    finally:
        proc.terminate()
        proc.wait(10)
        pods.close()


def scraped(url: str, targets: int, timeout: float = 30) -> None:
    """Until every target has been scraped (is up) at least once."""
    query = urllib.parse.urlencode({"query": "count(up == 1)"})
    deadline = time.monotonic() + timeout
    while True:
        result = json.loads(urllib.request.urlopen(f"{url}/api/v1/query?{query}").read())["data"]["result"]
        if result and int(float(result[0]["value"][1])) == targets:
            return
        assert time.monotonic() < deadline, f"{targets} targets not up after {timeout}s: {result}"
        time.sleep(0.25)


def pods_mean(pods: Pods, namespace: str, service: str) -> float | None:
    """What `PodDrift` computes from these pods' own /metrics."""
    texts = [
        urllib.request.urlopen(pods.url(k)).read().decode() for k in PODS if k[:2] == (namespace, service)
    ]
    return combine(s for s in map(pod_sample, texts) if s is not None)


async def test_prometheus_drift_is_the_pods_row_weighted_mean(prometheus: tuple[str, Pods]) -> None:
    url, pods = prometheus
    scraped(url, len(PODS))
    kube = KubeClient(Connection(server="https://api-server.invalid"))  # only its plain GET is used
    try:
        reader = drift_reader(kube, Settings(prometheus_url=url + "/"))
        assert isinstance(reader, PrometheusDrift)
        drift = await reader("ml", "bc")
        # pod a: 0.5 on 300 rows, pod b: 0.1 on 100; c has no score yet, d's is NaN; other
        # deployments' pods and bc's in another namespace are not counted
        assert drift == pytest.approx((0.5 * 300 + 0.1 * 100) / 400)
        assert drift == pytest.approx(pods_mean(pods, "ml", "bc"))
        constant = await reader("ml", "constant")
        assert constant is not None and math.isnan(constant)  # scored, but no finite score
        assert await reader("ml", "absent") is None  # no pod has a score yet
        assert await reader("staging", "bc") == pytest.approx(0.9)
    finally:
        await kube.close()


async def test_no_prometheus_answer_is_no_score() -> None:
    from tests.conftest import free_port

    kube = KubeClient(Connection(server="https://api-server.invalid"))
    try:
        reader = drift_reader(kube, Settings(prometheus_url=f"http://127.0.0.1:{free_port()}"))
        assert await reader("ml", "bc") is None
    finally:
        await kube.close()
