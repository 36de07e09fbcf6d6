"""The server's cheaper ONNX feeds for all-numeric models are the arrays `onnxfile.feeds` makes
(what the export's parity check was run on), in both layouts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conveyor.artifacts import onnxfile
from conveyor.serving.model import _numeric_feeds

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
