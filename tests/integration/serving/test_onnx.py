"""The demo model is served by onnxruntime, predicting what its scikit-learn pipeline predicts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conveyor.serving.model import ModelError, ServedModel, resolve_champion, resolve_uri
from tests.integration.serving.conftest import model_path, start_serve


def test_demo_model_served_by_onnx_with_skops_predictions(trained: dict[str, str], features: Any) -> None:
    served = ServedModel.load(resolve_uri(trained["model"]))
    assert served.backend == "onnx"
    assert served.estimator is None  # the skops file was not loaded
    skops = ServedModel.load(resolve_uri(trained["model"]), "skops")
    assert skops.backend == "skops"
    assert (served.features, served.numeric, served.classes, served.task) == (
        skops.features,
        skops.numeric,
        skops.classes,
        skops.task,
    )
    rows = features.iloc[:400].to_dict("records")
    onnx = served.predict(rows)
    want = [int(v) for v in skops.estimator.predict(skops.frame(rows))]
    assert onnx == want
    assert all(type(v) is int for v in onnx)
    assert skops.predict(rows) == want


def test_onnx_server_process_maps_no_sklearn_pandas_or_scipy(trained: dict[str, str], features: Any) -> None:
    """On the ONNX path the server process never loads scikit-learn, pandas, scipy or skops: none
    of their files is mapped after predictions and a drift update."""
    proc = start_serve("--model", trained["model"], "--drift-interval", "0.2")
    try:
        body = json.dumps({"instances": features.iloc[:200].to_dict("records")}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{proc.port}/predict", data=body, headers={"Content-Type": "application/json"}
        )
        assert len(json.loads(urllib.request.urlopen(request, timeout=10).read())["predictions"]) == 200
        time.sleep(1)  # a drift update ran
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=10).read().decode()
        assert 'conveyor_model_backend{backend="onnx"' in metrics
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "onnxruntime" in maps  # the check sees site-packages at all
        for package in ("sklearn", "pandas", "scipy", "skops"):
            assert f"/site-packages/{package}/" not in maps, package
    finally:
        proc.terminate()
        proc.wait(10)


def test_backend_onnx_without_onnx_file_exits_naming_the_way_out(
    trained: dict[str, str], tmp_path: Path
) -> None:
    model = copy_store(trained, tmp_path)
    outputs = model.with_name("outputs.json")
    outputs.write_text(outputs.read_text().replace('"onnx":', '"not-onnx":'))
    with pytest.raises(ModelError, match=r"has no usable model\.onnx .*--backend auto or skops"):
        ServedModel.load(resolve_uri(str(model)), "onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "serve", "--model", str(model), "--backend", "onnx"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "no usable model.onnx" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_champion_served_by_onnx(trained: dict[str, str]) -> None:
    served = ServedModel.load(resolve_champion("breast-cancer", trained["store"]))
    assert served.backend == "onnx"


def copy_store(trained: dict[str, str], tmp_path: Path) -> Path:
    """A copy of the session's store (its records rewritten to point into the copy), and the
    copied model's path: what a test changes there leaves the shared store alone."""
    store = tmp_path / "store"
    shutil.copytree(trained["store"], store)
    for record in store.rglob("*.json"):
        record.write_text(record.read_text().replace(trained["store"], str(store)))
    return store / model_path(trained).relative_to(trained["store"])


def test_changed_onnx_file_refused(trained: dict[str, str], tmp_path: Path) -> None:
    model = copy_store(trained, tmp_path)
    onnx = model.with_name("model.onnx")
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 1  # one bit: the digest is checked before a byte is parsed
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"refusing to serve .*model\.onnx: its SHA-256 is"):
        ServedModel.load(resolve_uri(str(model)))


def test_without_onnx_file_skops_serves(trained: dict[str, str], tmp_path: Path, features: Any) -> None:
    model = copy_store(trained, tmp_path)
    outputs = model.with_name("outputs.json")
    outputs.write_text(outputs.read_text().replace('"onnx":', '"not-onnx":'))
    served = ServedModel.load(resolve_uri(str(model)))
    assert served.backend == "skops"
    assert len(served.predict(features.iloc[:5].to_dict("records"))) == 5
