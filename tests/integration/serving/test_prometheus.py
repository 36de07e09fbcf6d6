"""A real Prometheus scrapes a real `conveyor serve`; drift is asserted through PromQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus is not installed (make test installs it)"
)


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            assert proc.poll() is None, f"{proc.args} exited"
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.2)


def send(port: int, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 50):
        body = json.dumps({"instances": rows[i : i + 50]}).encode()
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body))


def promql(port: int, query: str) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    result = json.loads(urllib.request.urlopen(url).read())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for_value(port: int, query: str, check: Any, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = promql(port, query)
        if value is not None and check(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{query} = {value} after {timeout}s")


def test_drift_through_prometheus(trained: dict[str, str], features: Any, tmp_path: Path) -> None:
    serve_port, prom_port = free_port(), free_port()
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "serve",
            "--model",
            trained["model"],
            "--host",
            "127.0.0.1",
            "--port",
            str(serve_port),
            "--window",
            "500",
            "--min-samples",
            "200",
            "--drift-interval",
            "0.5",
        ],
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{REPO / 'deploy' / 'prometheus' / 'conveyor-rules.yaml'}]\n"
        "scrape_configs:\n"
        f"  - job_name: conveyor\n    static_configs: [{{targets: ['127.0.0.1:{serve_port}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{serve_port}/v2/health/ready", serve)
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", prom)
        sample = features.sample(500, random_state=1, replace=True)
        send(serve_port, sample.to_dict(orient="records"))
        query = 'conveyor_drift_score{model="breast-cancer"}'
        stable = wait_for_value(prom_port, query, lambda v: True)
        time.sleep(2)  # a few more scrapes of the same window
        stable = promql(prom_port, query)
        assert stable is not None and stable < 0.1, stable
        shifted = features.sample(500, random_state=2, replace=True)
        shifted["mean radius"] = shifted["mean radius"] * 1.5
        send(serve_port, shifted.to_dict(orient="records"))
        drifted = wait_for_value(prom_port, query, lambda v: v > 0.25)
        assert drifted > 0.25
        feature = promql(prom_port, 'conveyor_feature_drift{feature="mean radius", method="psi"}')
        assert feature is not None and feature > 0.25
        others = promql(
            prom_port,
            'max(conveyor_feature_drift{feature!="mean radius", feature!="__prediction__", method="psi"})',
        )
        assert others is not None and others < 0.1  # only the shifted feature drifted
        print(
            f"drift score through Prometheus: {stable:.3f} in-distribution, {drifted:.3f} shifted "
            f"(mean radius {feature:.3f}, others max {others:.3f})"
        )
    finally:
        for proc in (serve, prom):
            proc.terminate()
            proc.wait(10)


def test_alert_rules_pass_promtool() -> None:
    proc = subprocess.run(
        ["promtool", "test", "rules", "rules_test.yaml"],
        cwd=REPO / "tests" / "prometheus",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
