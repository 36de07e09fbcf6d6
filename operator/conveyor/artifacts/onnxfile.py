"""ONNX model files: a fitted pipeline's code-free twin, run by onnxruntime.

The train stage writes `model.onnx` beside `model.skops` only when the two predict alike (see
`stages/export.py`); the server prefers it. Loading one executes no Python from the file: it is
a graph of ONNX operators. Like `models.load_model`, `load_session` checks the SHA-256 the
caller's records give before it parses a byte, and parses the very bytes it hashed.

Both the export's parity check and the server build their inputs with `feeds`, so what was
checked is what is served. Two layouts: when every feature is numeric, one float32 `[n,
features]` input named `features` (a matrix: onnxruntime runs it 3-6x faster than thirty
inputs); otherwise one `[n, 1]` input per feature, in the pipeline's feature order, float32 for
numeric features (the ONNX-ML Imputer has no double kernel), strings otherwise. A missing string
(None, NaN, pandas' NA) is fed as `MISSING`, the value the exported graph imputes (skl2onnx
imputes strings only by a string value, not by NaN); the server refuses that value from clients.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.artifacts.models import DigestMismatch

MEDIA_TYPE = "application/onnx"
OUTPUT_NAME = "onnx"  # the train stage's output holding model.onnx
FILENAME = "model.onnx"
MATRIX = "features"  # the one input of a model whose features are all numeric
MISSING = "\x00"  # a missing string feature, as the graph's imputer sees it (no client may send it)


def is_matrix(inputs: Sequence[str], features: Sequence[str]) -> bool:
    """Whether a graph with `inputs` takes all `features` as one matrix (else one per feature;
    with a single feature the two are the same array)."""
    return list(inputs) == [MATRIX] and len(features) > 1


def fits(inputs: Sequence[str], features: Sequence[str], numeric: set[str]) -> bool:
    """Whether `feeds` can feed a graph with `inputs` for these features."""
    if is_matrix(inputs, features):
        return numeric.issuperset(features)
    return len(inputs) == len(features)


def session(data: bytes) -> Any:
    """An onnxruntime session for a serialised model: CPU only, one thread, so that concurrent
    requests do not oversubscribe the cores the server's worker threads already use."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def load_session(path: Path, sha256: str) -> Any:
    """The session for the ONNX file at `path`, whose recorded SHA-256 is `sha256`."""
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DigestMismatch(path, sha256, actual)
    return session(data)


def _number(v: Any) -> float:
    return math.nan if v is None else float(v)


def _text(v: Any) -> str:
    """A string feature's value as fed: itself as text, or `MISSING` for None, NaN or NA (the
    values the pipeline's imputer treats as missing; NA is pandas', known by its type's name so
    that the server need not import pandas)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ == "NAType":
        return MISSING
    return str(v)


def feeds(
    inputs: Sequence[str], features: Sequence[str], numeric: set[str], rows: Sequence[dict[str, Any]]
) -> dict[str, np.ndarray[Any, Any]]:
    """The session inputs (named `inputs`: the matrix, or one per feature in order) for
    validated rows."""
    if is_matrix(inputs, features):
        table = [[_number(r[f]) for f in features] for r in rows]
        return {MATRIX: np.array(table, dtype=np.float64).astype(np.float32).reshape(-1, len(features))}
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, f in zip(inputs, features, strict=True):
        if f in numeric:
            out[name] = np.array([_number(r[f]) for r in rows], dtype=np.float32).reshape(-1, 1)
        else:
            out[name] = np.array([_text(r[f]) for r in rows], dtype=object).reshape(-1, 1)
    return out


def frame_feeds(
    inputs: Sequence[str], features: Sequence[str], numeric: set[str], frame: Any
) -> dict[str, np.ndarray[Any, Any]]:
    """What `feeds` makes of `frame.to_dict("records")` (a pandas DataFrame), column by column:
    the same arrays without a Python object per cell (the export's parity check on 50,000 rows
    spent a second in `to_dict` and `feeds`)."""
    if is_matrix(inputs, features):
        table = frame[list(features)].to_numpy(dtype=np.float64, na_value=math.nan)
        return {MATRIX: table.astype(np.float32).reshape(-1, len(features))}
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, f in zip(inputs, features, strict=True):
        column = frame[f]
        if f in numeric:  # None/NaN/NA -> NaN; float64 first, then float32, as float(v) then the array
            values = column.to_numpy(dtype=np.float64, na_value=math.nan).astype(np.float32)
            out[name] = values.reshape(-1, 1)
        else:
            texts = [_text(v) for v in column.tolist()]
            out[name] = np.array(texts, dtype=object).reshape(-1, 1)
    return out
