"""The train stage's ONNX export: stored only with parity, skipped (never failed) otherwise, and
a changed `model.onnx` refused by its recorded digest."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.artifacts import onnxfile
from conveyor.artifacts.models import DigestMismatch
from conveyor.stages import export
from tests.unit.stages.test_stages import Chain, csv_with_gaps

LOGREG = {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 2000}}


def breast_cancer(tmp_path: Path) -> Chain:
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": "sklearn://breast_cancer", "target": "target"}, [])
    chain.run("transform", "transform", {"testSize": 0.25, "randomState": 7}, ["ingest"])
    return chain


def test_breast_cancer_model_exported_with_parity_on_the_test_split(tmp_path: Path) -> None:
    chain = breast_cancer(tmp_path)
    res = chain.run("train", "train", LOGREG, ["transform"])
    onnx = res.outputs[onnxfile.OUTPUT_NAME]
    assert res.metrics["onnx_exported"] == 1.0
    assert res.metrics["onnx_parity"] == 1.0
    assert res.metrics["onnx_max_abs_diff"] <= export.TOLERANCE
    parity = onnx.meta["parity"]
    assert (parity["held"], parity["data"], parity["rows"]) == (True, "test", 143)
    assert onnx.media_type == onnxfile.MEDIA_TYPE
    assert onnx.uri.endswith("/ns/p/r/train/model.onnx")
    data = Path(onnx.uri.removeprefix("file://")).read_bytes()
    assert hashlib.sha256(data).hexdigest() == onnx.sha256
    assert onnx.meta["features"] == res.outputs["model"].meta["features"]
    assert onnx.meta["inputs"] == [onnxfile.MATRIX]  # all numeric: one [n, 30] float32 input
    assert onnx.meta["classes"] == [0, 1]


def test_a_pipeline_not_convertible_as_a_matrix_gets_one_input_per_feature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-feature layout (a string column among them, or a step skl2onnx cannot map onto
    positions) is exported, checked and recorded like the matrix."""
    chain = breast_cancer(tmp_path)
    monkeypatch.setattr(export, "_matrix_graph", lambda model, features: None)
    res = chain.run("train", "train", LOGREG, ["transform"])
    onnx = res.outputs[onnxfile.OUTPUT_NAME]
    assert res.metrics["onnx_parity"] == 1.0
    assert len(onnx.meta["inputs"]) == 30 and onnx.meta["inputs"][0] == "mean_radius"  # sanitised


def test_no_parity_stores_nothing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = breast_cancer(tmp_path)
    monkeypatch.setattr(export, "TOLERANCE", 0.0)  # float32 probabilities never match exactly
    res = chain.run("train", "train", LOGREG, ["transform"])
    assert onnxfile.OUTPUT_NAME not in res.outputs
    assert (res.metrics["onnx_exported"], res.metrics["onnx_parity"]) == (0.0, 0.0)
    assert "no parity on the test rows: outputs differ by up to" in capsys.readouterr().err
    assert not (Path(res.outputs["model"].uri.removeprefix("file://")).parent / "model.onnx").exists()


def test_string_features_with_missing_values_export_and_predict_as_the_pipeline(tmp_path: Path) -> None:
    """The transform stage imputes strings by NaN, which skl2onnx cannot convert: the exported
    copy imputes `onnxfile.MISSING`, which `feeds` sends for a missing string, so the graph
    predicts what the pipeline predicts, missing values included, fed as the server feeds."""
    import pandas as pd

    from conveyor.artifacts.models import load_model

    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": str(csv_with_gaps(tmp_path)), "target": "price"}, [])
    chain.run("transform", "transform", {}, ["ingest"])
    res = chain.run("train", "train", {"estimator": "sklearn.linear_model.Ridge"}, ["transform"])
    onnx = res.outputs[onnxfile.OUTPUT_NAME]
    assert res.metrics["onnx_parity"] == 1.0
    assert onnx.meta["inputs"] == ["size", "color"] and onnx.meta["numeric"] == ["size"]
    model = res.outputs["model"]
    pipeline = load_model(Path(model.uri.removeprefix("file://")), model.sha256)
    rows = [
        {"size": 9.5, "color": "red"},
        {"size": None, "color": None},  # both missing: imputed as the pipeline imputes
        {"size": 12.0, "color": None},
        {"size": 8.0, "color": "purple"},  # a colour never seen: ignored, as by the pipeline
    ]
    session = onnxfile.load_session(Path(onnx.uri.removeprefix("file://")), onnx.sha256)
    got = session.run(None, onnxfile.feeds(onnx.meta["inputs"], ["size", "color"], {"size"}, rows))[0]
    want = pipeline.predict(pd.DataFrame.from_records(rows).astype({"size": float, "color": object}))
    np.testing.assert_allclose(got.ravel(), want, rtol=export.RTOL, atol=export.TOLERANCE)


def test_unconvertible_model_is_skipped_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: Any) -> bytes:
        raise NotImplementedError("no converter for this estimator")

    monkeypatch.setattr(export, "convert", refuse)
    res = breast_cancer(tmp_path).run("train", "train", LOGREG, ["transform"])
    assert "model" in res.outputs  # the stage still succeeds, on skops alone
    assert onnxfile.OUTPUT_NAME not in res.outputs
    assert res.metrics["onnx_exported"] == 0.0
    assert "onnx_parity" not in res.metrics
    assert "skl2onnx cannot convert this pipeline: NotImplementedError" in capsys.readouterr().err


def test_tampered_onnx_file_refused(tmp_path: Path) -> None:
    chain = breast_cancer(tmp_path)
    onnx = chain.run("train", "train", LOGREG, ["transform"]).outputs[onnxfile.OUTPUT_NAME]
    path = Path(onnx.uri.removeprefix("file://"))
    onnxfile.load_session(path, onnx.sha256)  # the recorded file loads
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DigestMismatch, match=r"model\.onnx: its SHA-256 is"):
        onnxfile.load_session(path, onnx.sha256)


def test_feeds_are_float32_columns_in_feature_order() -> None:
    rows: list[dict[str, Any]] = [{"a": 1, "b": None, "c": "x"}, {"a": 2.5, "b": 3.0, "c": None}]
    feeds = onnxfile.feeds(["in_a", "in_b", "in_c"], ["a", "b", "c"], {"a", "b"}, rows)
    assert list(feeds) == ["in_a", "in_b", "in_c"]
    assert feeds["in_a"].dtype == np.float32 and feeds["in_a"].shape == (2, 1)
    assert np.isnan(feeds["in_b"][0, 0]) and feeds["in_b"][1, 0] == 3.0
    assert feeds["in_c"].ravel().tolist() == ["x", onnxfile.MISSING]


def test_frame_feeds_are_the_feeds_of_the_frames_records() -> None:
    """The parity check feeds a DataFrame column by column; the server feeds rows. Both must give
    the same arrays, cell for cell: ints, floats, NaN, None and pd.NA; strings, numpy scalars in
    an object column, categoricals."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "i": [1, 2**40 + 1, -3, 4],
            "f": [0.1, float("nan"), 1e30, 2.5],
            "n": pd.array([1, None, 3, 4], dtype="Int64"),
            "s": ["x", None, float("nan"), "y"],
            "o": pd.Series([np.int64(3), np.float64(1.5), True, "z"], dtype=object),
            "c": pd.Categorical(["a", "b", None, "a"]),
        }
    )
    names = [f"in_{c}" for c in frame.columns]
    numeric = {"i", "f", "n"}
    want = onnxfile.feeds(names, list(frame.columns), numeric, frame.to_dict("records"))
    got = onnxfile.frame_feeds(names, list(frame.columns), numeric, frame)
    assert list(got) == list(want)
    for name in names:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape == (4, 1)
        if want[name].dtype == np.float32:
            np.testing.assert_array_equal(got[name], want[name])  # NaN where NaN, bit for bit
        else:
            assert got[name].ravel().tolist() == want[name].ravel().tolist()


def test_the_exported_graph_lists_its_operator_sets_sorted(tmp_path: Path) -> None:
    """skl2onnx lists them in the order of a Python set, which changed between two identical
    runs (`ai.onnx.ml` first in one, second in the other): model.onnx is an output, and its
    digest is in the cache key of the evaluate stage after it."""
    import onnx

    chain = breast_cancer(tmp_path)
    ref = chain.run("train", "train", LOGREG, ["transform"]).outputs[onnxfile.OUTPUT_NAME]
    graph = onnx.load_from_string(Path(ref.uri.removeprefix("file://")).read_bytes())
    opsets = [(o.domain, o.version) for o in graph.opset_import]
    assert opsets == [("", export.OPSET), ("ai.onnx.ml", 1)]
