"""The demo model is served by onnxruntime, predicting what its scikit-learn pipeline predicts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conveyor.serving.model import ModelError, ServedModel, resolve_champion, resolve_uri
from tests.integration.serving.conftest import model_path


def test_demo_model_served_by_onnx_with_skops_predictions(trained: dict[str, str], features: Any) -> None:
    served = ServedModel.load(resolve_uri(trained["model"]))
    assert served.backend == "onnx"
    rows = features.iloc[:400].to_dict("records")
    onnx = served.predict(rows)
    want = [int(v) for v in served.estimator.predict(served.frame(rows))]
    assert onnx == want
    assert all(type(v) is int for v in onnx)
    served.session = None  # the fallback path, on the same object
    assert served.backend == "skops"
    assert served.predict(rows) == want


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
    onnx.write_bytes(onnx.read_bytes().replace(b"mean_radius", b"mean_radiuz"))
    with pytest.raises(ModelError, match=r"refusing to serve .*model\.onnx: its SHA-256 is"):
        ServedModel.load(resolve_uri(str(model)))


def test_without_onnx_file_skops_serves(trained: dict[str, str], tmp_path: Path, features: Any) -> None:
    model = copy_store(trained, tmp_path)
    outputs = model.with_name("outputs.json")
    outputs.write_text(outputs.read_text().replace('"onnx":', '"not-onnx":'))
    served = ServedModel.load(resolve_uri(str(model)))
    assert served.backend == "skops"
    assert len(served.predict(features.iloc[:5].to_dict("records"))) == 5
