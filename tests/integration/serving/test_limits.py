"""Bounded resources of the model server, measured on a real server process: a request body
that never completes is cut off with a 408 (and the server keeps serving others), and the drift
window's memory does not grow with what clients send (RSS from /proc/<pid>/status)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EXAMPLES, free_port
from tests.integration.serving.conftest import model_path, start_serve, wait_ready

BODY_TIMEOUT = 1.0  # seconds, for the server started below (the default is 10)
MARGIN = 2.0  # seconds the 408 may take beyond the timeout on a busy machine
# A server with a short body timeout: the same objects `conveyor serve` builds, other options
# at their defaults.
SERVER = """
import sys
from conveyor.serving.app import InferenceServer, ServeOptions, serve
from conveyor.serving.model import ServedModel, resolve_uri
from conveyor.serving.monitor import DriftMonitor
model = ServedModel.load(resolve_uri(sys.argv[1]))
monitor = DriftMonitor(model.name, model.version, model.profile)
server = InferenceServer(model, monitor, ServeOptions(body_timeout=float(sys.argv[3])))
serve(server, "127.0.0.1", int(sys.argv[2]))
"""


def post(port: int, path: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def short_timeout_server(trained: dict[str, str]) -> Any:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(model_path(trained)), str(port), str(BODY_TIMEOUT)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait()


def slow_request(port: int, result: dict[str, Any]) -> None:
    """Headers and half of the body, then silence: what the server answers, and when."""
    body = json.dumps({"instances": [{"x": 1.0}] * 100}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(BODY_TIMEOUT + MARGIN + 5)
        sock.sendall(head + body[: len(body) // 2])
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            answer += sock.recv(65536)
        result["elapsed"] = time.monotonic() - started
    head_text, _, result["body"] = answer.partition(b"\r\n\r\n")
    result["head"] = head_text.decode()
    result["body"] = json.loads(result["body"])


def _length(answer: bytes) -> int:
    """The Content-Length of a response's head so far (a large number until it is known)."""
    for line in answer.partition(b"\r\n\r\n")[0].decode().split("\r\n"):
        if line.lower().startswith("content-length:"):
            return int(line.split(":")[1])
    return 1 << 30


def test_a_slow_body_is_cut_off_with_408(short_timeout_server: int, features: Any) -> None:
    port = short_timeout_server
    row = {str(k): float(v) for k, v in features.iloc[0].items()}
    result: dict[str, Any] = {}
    slow = threading.Thread(target=slow_request, args=(port, result))
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert post(port, "/predict", {"instances": [row]})[0] == 200  # served meanwhile
    assert time.monotonic() - started < BODY_TIMEOUT  # not queued behind the slow body
    slow.join(BODY_TIMEOUT + MARGIN + 10)
    assert result["head"].startswith("HTTP/1.1 408"), result
    assert "Connection: close" in result["head"]  # the connection is not reused
    assert "did not arrive within 1 s" in result["body"]["error"]
    assert BODY_TIMEOUT - 0.1 <= result["elapsed"] <= BODY_TIMEOUT + MARGIN
    assert post(port, "/predict", {"instances": [row]})[0] == 200  # and after
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'conveyor_requests_total{code="408",endpoint="predict"' in metrics
    counted = [line for line in metrics.splitlines() if 'code="408"' in line and "_total" in line]
    assert counted and counted[0].endswith(" 1.0"), counted


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with categorical features (species, island, sex), trained by the pipeline."""
    tmp = tmp_path_factory.mktemp("penguins")
    csv = tmp / "penguins.csv"
    csv.write_text((EXAMPLES / "penguins" / "penguins.csv").read_text())
    doc = yaml.safe_load((EXAMPLES / "penguins" / "pipeline.yaml").read_text())
    doc["spec"]["stages"][0]["with"]["source"] = str(csv)
    doc["spec"]["stages"][-1]["with"]["gate"] = {"metric": "r2", "min": -100.0}
    pipeline = tmp / "penguins.yaml"
    pipeline.write_text(yaml.safe_dump(doc))
    out = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", str(pipeline), "--store", str(tmp / "store"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(json.loads(out.stdout)["model"]["uri"].removeprefix("file://"))


REQUESTS = 1000
STRING_BYTES = 512 << 10  # per request: one row whose categorical value is a 512 KiB string
RSS_BOUND_MIB = 48  # the old window kept all 1,000 strings: ~500 MiB


def test_drift_window_memory_is_bounded(penguins: Path) -> None:
    """1,000 requests of ~0.5 MB, each a row with a new, huge category: the window stores a
    one-byte code for it, so the server's RSS stays flat (it kept every string before)."""
    proc = start_serve("--model", str(penguins))
    port: int = proc.port  # type: ignore[attr-defined]
    row = {
        "species": "",
        "island": "Biscoe",
        "bill_length_mm": 45.0,
        "bill_depth_mm": 15.0,
        "flipper_length_mm": 210.0,
        "sex": "female",
    }
    try:

        def send(i: int) -> None:
            big = {**row, "species": f"{i:08d}" + "x" * STRING_BYTES}
            code, body = post(port, "/predict", {"instances": [big]})
            assert code == 200, body

        for i in range(50):  # warm up: allocator arenas, caches, the window's first pages
            send(i)
        before = rss_kib(proc.pid)
        for i in range(REQUESTS):
            send(i)
        after = rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    growth_mib = (after - before) / 1024
    print(f"RSS before {before / 1024:.1f} MiB, after {after / 1024:.1f} MiB, growth {growth_mib:.1f}")
    assert growth_mib < RSS_BOUND_MIB
