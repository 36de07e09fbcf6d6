"""The server's cheaper ONNX feeds for all-numeric models are the arrays `onnxfile.feeds` makes
(what the export's parity check was run on), in both layouts; a model with string features is
served by ONNX too, predicting as its pipeline does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.artifacts import onnxfile
from conveyor.serving.model import BadInput, ServedModel, _numeric_feeds, resolve_uri
from conveyor.stages.export import RTOL, TOLERANCE
from tests.unit.stages.test_stages import Chain, csv_with_gaps

FEATURES = ["a", "b", "c"]
ROWS: list[dict[str, Any]] = [
    {"a": 1, "b": None, "c": 0.1},
    {"a": 2**40 + 1, "b": 3.0, "c": -1e30},
    {"a": -7, "b": 1e-45, "c": 2.5},
]


@pytest.mark.parametrize(
    "inputs", [[onnxfile.MATRIX], ["in_a", "in_b", "in_c"]], ids=["matrix", "per feature"]
)
def test_numeric_feeds_are_the_feeds(inputs: list[str]) -> None:
    want = onnxfile.feeds(inputs, FEATURES, set(FEATURES), ROWS)
    got = _numeric_feeds(inputs, FEATURES, ROWS)
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype == np.float32
        assert got[name].shape == want[name].shape
        np.testing.assert_array_equal(got[name], want[name])


def test_the_matrix_layout_needs_numeric_features() -> None:
    assert onnxfile.fits([onnxfile.MATRIX], FEATURES, set(FEATURES))
    assert not onnxfile.fits([onnxfile.MATRIX], FEATURES, {"a", "b"})
    assert onnxfile.fits(["x", "y", "z"], FEATURES, {"a"})
    assert not onnxfile.fits(["x", "y"], FEATURES, set(FEATURES))


def test_a_model_with_string_features_is_served_by_onnx_as_by_skops(tmp_path: Path) -> None:
    """Missing strings included; the value the graph reads as a missing string is refused."""
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": str(csv_with_gaps(tmp_path)), "target": "price"}, [])
    chain.run("transform", "transform", {}, ["ingest"])
    res = chain.run("train", "train", {"estimator": "sklearn.linear_model.Ridge"}, ["transform"])
    uri = res.outputs["model"].uri
    onnx, skops = ServedModel.load(resolve_uri(uri)), ServedModel.load(resolve_uri(uri), "skops")
    assert (onnx.backend, skops.backend) == ("onnx", "skops")
    rows: list[dict[str, Any]] = [
        {"size": 9.5, "color": "red"},
        {"size": None, "color": None},
        {"size": 12.0, "color": None},
        {"size": 8.0, "color": "purple"},
    ]
    onnx.validate(rows)
    np.testing.assert_allclose(onnx.predict(rows), skops.predict(rows), rtol=RTOL, atol=TOLERANCE)
    with pytest.raises(BadInput, match=r"instances\[0\]\.color is the NUL character"):
        onnx.validate([{"size": 1.0, "color": onnxfile.MISSING}])
