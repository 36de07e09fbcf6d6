"""The model server in-process (aiohttp test client) and as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from conveyor.serving.app import InferenceServer, ServeOptions
from conveyor.serving.model import ModelError, ServedModel, resolve_champion, resolve_uri
from conveyor.serving.monitor import DriftMonitor
from tests.integration.serving.conftest import Client, model_path, start_serve


def load(trained: dict[str, str]) -> ServedModel:
    return ServedModel.load(resolve_uri(trained["model"]))


def pipeline(trained: dict[str, str]) -> Any:
    """The scikit-learn pipeline itself (the server above runs its ONNX twin)."""
    return ServedModel.load(resolve_uri(trained["model"]), "skops").estimator


@pytest_asyncio.fixture
async def client(trained: dict[str, str]) -> AsyncIterator[Client]:
    model = load(trained)
    monitor = DriftMonitor(model.name, model.version, model.profile, window=200, min_samples=10)
    server = InferenceServer(
        model, monitor, ServeOptions(max_rows=50, max_body_bytes=64_000, drift_interval=0.1)
    )
    async with Client(server) as c:
        c.served = model  # type: ignore[attr-defined]
        c.pipeline = pipeline(trained)  # type: ignore[attr-defined]
        yield c


async def test_predict_and_v2_match_the_model(client: Client, features: Any) -> None:
    rows = features.head(20)
    expected = client.pipeline.predict(rows).tolist()  # type: ignore[attr-defined]
    resp = await client.post("/predict", json={"instances": rows.to_dict(orient="records")})
    assert resp.status == 200
    assert (await resp.json())["predictions"] == expected
    columns = {
        "inputs": [
            {"name": c, "shape": [20], "datatype": "FP64", "data": rows[c].tolist()} for c in rows.columns
        ],
        "id": "req-1",
    }
    resp = await client.post("/v2/models/breast-cancer/infer", json=columns)
    body = await resp.json()
    assert resp.status == 200 and body["outputs"][0]["data"] == expected and body["id"] == "req-1"
    assert body["outputs"][0]["datatype"] == "INT64" and body["outputs"][0]["shape"] == [20]
    tensor = {
        "inputs": [{"name": "input-0", "shape": [20, 30], "datatype": "FP64", "data": rows.values.tolist()}]
    }
    resp = await client.post("/v2/models/breast-cancer/infer", json=tensor)
    assert (await resp.json())["outputs"][0]["data"] == expected


async def test_health_and_metadata(client: Client) -> None:
    assert (await client.get("/v2/health/live")).status == 200
    assert (await (await client.get("/v2/health/ready")).json()) == {"ready": True}
    meta = await (await client.get("/v2/models/breast-cancer")).json()
    assert meta["platform"] == "sklearn" and len(meta["inputs"]) == 30
    assert meta["parameters"]["sha256"] == client.served.sha256  # type: ignore[attr-defined]
    backend = meta["parameters"]["backend"]
    assert backend == client.served.backend == "onnx"  # type: ignore[attr-defined]  # parity held at training
    metrics = await (await client.get("/metrics")).text()
    assert 'conveyor_model_backend{backend="onnx",model="breast-cancer"' in metrics
    resp = await client.get("/v2/models/nope")
    assert resp.status == 404 and "serves 'breast-cancer'" in (await resp.json())["error"]


def _row(features: Any) -> dict[str, Any]:
    return dict(features.iloc[0].to_dict())


BAD = [
    (
        "missing feature",
        lambda r: {"instances": [{k: v for k, v in r.items() if k != "mean radius"}]},
        "instances[0] is missing feature(s): mean radius",
    ),
    ("unknown feature", lambda r: {"instances": [{**r, "colour": 1}]}, "unknown feature(s): colour"),
    (
        "wrong type",
        lambda r: {"instances": [{**r, "mean area": "big"}]},
        "instances[0].mean area must be a number",
    ),
    ("not a list", lambda r: {"instances": r}, '{"instances": [{feature: value'),
    ("too many rows", lambda r: {"instances": [r] * 51}, "51 rows is over the limit of 50"),
    ("no rows", lambda r: {"instances": []}, "no rows"),
]


@pytest.mark.parametrize(("make", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_input_is_a_400_naming_the_field(
    client: Client, features: Any, make: Any, message: str
) -> None:
    resp = await client.post("/predict", json=make(_row(features)))
    assert resp.status == 400
    assert message in (await resp.json())["error"]


async def test_bad_bodies(client: Client, features: Any) -> None:
    resp = await client.post("/predict", data=b"{not json")
    assert resp.status == 400 and "not JSON" in (await resp.json())["error"]
    resp = await client.post("/predict", data=b"x" * 70_000)
    assert resp.status == 413 and "over 64000 bytes" in (await resp.json())["error"]
    v2 = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    resp = await client.post("/v2/models/breast-cancer/infer", json=v2)
    assert resp.status == 400 and "shape [n, 30]" in (await resp.json())["error"]


async def test_metrics_parse_and_count(client: Client, features: Any) -> None:
    rows = features.head(30).to_dict(orient="records")
    await client.post("/predict", json={"instances": rows})
    await client.post("/predict", json={"instances": [{"x": 1}]})
    import asyncio

    await asyncio.sleep(0.3)  # a drift update
    text = await (await client.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {
        tuple(sorted(s.labels.items())): s.value
        for s in families["conveyor_requests"].samples
        if s.name == "conveyor_requests_total"
    }
    assert requests[(("code", "400"), ("endpoint", "predict"), ("model", "breast-cancer"))] >= 1
    assert requests[(("code", "200"), ("endpoint", "predict"), ("model", "breast-cancer"))] >= 1
    assert "conveyor_drift_score" in families and "conveyor_feature_drift" in families
    assert "conveyor_request_duration_seconds" in families


def test_tampered_model_is_refused(trained: dict[str, str]) -> None:
    path = model_path(trained)
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\0")
        with pytest.raises(ModelError, match=r"SHA-256 is .* the run recorded"):
            ServedModel.load(resolve_uri(trained["model"]), "skops")
    finally:
        path.write_bytes(original)


def test_champion_resolution(trained: dict[str, str]) -> None:
    resolved = resolve_champion("breast-cancer", trained["store"])
    assert resolved.model.uri == trained["model"] and resolved.profile is not None
    with pytest.raises(ModelError, match="no promoted model"):
        resolve_champion("nope", trained["store"])


def test_serve_as_a_real_process(trained: dict[str, str], features: Any) -> None:
    proc = start_serve("--pipeline", "breast-cancer", "--store", trained["store"])
    port = proc.port  # type: ignore[attr-defined]
    try:
        rows = features.head(5).to_dict(orient="records")
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=json.dumps({"instances": rows}).encode()
        )
        body = json.loads(urllib.request.urlopen(req).read())
        assert body["predictions"] == pipeline(trained).predict(features.head(5)).tolist()
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_refuses_a_non_run_path(tmp_path: Path) -> None:
    (tmp_path / "m.skops").write_bytes(b"x")
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "serve", "--model", str(tmp_path / "m.skops")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "is not a run's model" in proc.stderr and "Traceback" not in proc.stderr


def test_several_workers_share_the_port_and_merge_metrics(trained: dict[str, str], features: Any) -> None:
    proc = start_serve(
        "--model", trained["model"], "--workers", "2", "--min-samples", "10", "--drift-interval", "0.2"
    )
    port = proc.port  # type: ignore[attr-defined]
    try:
        rows = features.head(5).to_dict(orient="records")
        for _ in range(40):  # new connections: the kernel spreads them over the workers
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/predict", data=json.dumps({"instances": rows}).encode()
            )
            urllib.request.urlopen(req).read()
        time.sleep(0.6)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        total = sum(
            s.value
            for f in text_string_to_metric_families(text)
            if f.name == "conveyor_requests"
            for s in f.samples
            if s.name == "conveyor_requests_total" and s.labels.get("code") == "200"
        )
        assert total == 40  # summed over both workers, whichever one answered the scrape
        assert "conveyor_drift_score" in text
    finally:
        proc.terminate()
        proc.wait(10)
