"""The train stage's ONNX export: the fitted pipeline converted by skl2onnx, kept only if it
predicts what the pipeline predicts.

Parity is checked on held-out rows (the test split the train stage hands on; the training rows
only when that split is empty), fed as the server feeds them (`artifacts.onnxfile.feeds`: the same
arrays, built column by column by `frame_feeds`): classifiers must give identical labels, and
probabilities (or regression outputs) may differ by at most `TOLERANCE` + `RTOL` * |the
pipeline's value| (ONNX computes in float32: a regression target in the thousands carries
~1e-4 of rounding; `onnx_max_abs_diff` records the largest difference either way). A pipeline
with string features is converted as a copy whose string imputers take `onnxfile.MISSING` for
missing (skl2onnx imputes strings only by a string value), which is how `feeds` sends a
missing string. When it holds, `model.onnx` is written as the output `onnx` (its SHA-256
recorded like every output) with the parity result in its metadata; otherwise nothing extra is
stored and the reason goes to the stage's log. Either way the metrics say what happened
(`onnx_exported`, `onnx_parity`, `onnx_max_abs_diff`), and the stage never fails because of the
export.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from conveyor.artifacts import onnxfile
from conveyor.artifacts.onnxfile import FILENAME, MEDIA_TYPE, OUTPUT_NAME, frame_feeds, session
from conveyor.stages.context import StageContext

TOLERANCE = 1e-4
RTOL = 1e-6  # of the pipeline's own value: float32 keeps ~7 significant digits
OPSET = 18


@dataclass(frozen=True)
class Parity:
    held: bool
    rows: int
    data: str  # which rows were compared: "test" or "train"
    max_abs_diff: float
    tolerance: float = TOLERANCE
    rtol: float = RTOL
    reason: str = ""


def numeric_features(x: pd.DataFrame) -> list[str]:
    """The columns fed as float32 (as the transform stage splits them: numbers, not booleans)."""
    return [
        c for c in x.columns if pd.api.types.is_numeric_dtype(x[c]) and not pd.api.types.is_bool_dtype(x[c])
    ]


def convert(model: Any, x: pd.DataFrame, numeric: list[str]) -> bytes:
    """The serialised ONNX graph of a fitted pipeline taking the columns of `x` (skl2onnx's
    errors propagate: it raises many types for what it cannot convert). The same pipeline
    gives the same bytes: skl2onnx lists the graph's operator sets in the order of a Python
    set (it varied between identical runs), so they are sorted by domain."""
    from skl2onnx import to_onnx

    graph = None
    if len(x.columns) > 1 and set(numeric) == set(x.columns):
        graph = _matrix_graph(model, list(x.columns))
    if graph is None:
        sample = x.iloc[:1].copy()
        for c in sample.columns:
            sample[c] = sample[c].astype(np.float32 if c in numeric else object)
        twin = _strings_imputed_by_missing(model) if len(numeric) < len(x.columns) else model
        graph = to_onnx(twin, sample, target_opset=OPSET, options=_options(twin))
    opsets = sorted({(o.domain, o.version) for o in graph.opset_import})  # the matrix graph lists "" twice
    del graph.opset_import[:]
    for domain, version in opsets:
        graph.opset_import.add(domain=domain, version=version)
    return bytes(graph.SerializeToString())


def _options(model: Any) -> dict[int, Any] | None:
    return {id(model): {"zipmap": False}} if hasattr(model, "classes_") else None


def _matrix_graph(model: Any, features: list[str]) -> Any:
    """The graph with one float32 `[n, features]` input (`onnxfile.MATRIX`) for a pipeline whose
    features are all numeric, or None when it does not convert so (then one input per feature).
    skl2onnx maps a ColumnTransformer's columns onto named inputs only, so a copy of the pipeline
    names its columns by position; the parity check then compares it with the pipeline itself."""
    import copy

    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import ColumnTransformer

    position = {f: i for i, f in enumerate(features)}
    try:
        twin = copy.deepcopy(model)
        for _, step in getattr(twin, "steps", []):
            if isinstance(step, ColumnTransformer):
                step.transformers_ = [
                    (name, fitted, [position[c] for c in cols] if _names(cols) else cols)
                    for name, fitted, cols in step.transformers_
                ]
        inputs = [(onnxfile.MATRIX, FloatTensorType([None, len(features)]))]
        return to_onnx(twin, initial_types=inputs, target_opset=OPSET, options=_options(twin))
    except Exception:  # a column it cannot place, any converter failure: one input per feature
        return None


def _strings_imputed_by_missing(model: Any) -> Any:
    """A copy of the pipeline whose imputers of strings (NaN as missing, which skl2onnx cannot
    convert) take `onnxfile.MISSING` for missing: with `feeds` sending a missing string as that
    value, the copy predicts what the pipeline predicts (the parity check says whether it does)."""
    import copy

    from sklearn.impute import SimpleImputer

    twin = copy.deepcopy(model)
    for step in _steps(twin):
        if isinstance(step, SimpleImputer) and getattr(step, "statistics_", np.empty(0)).dtype == object:
            missing = step.missing_values
            if missing is None or (isinstance(missing, float) and np.isnan(missing)):
                step.missing_values = onnxfile.MISSING
    return twin


def _steps(model: Any) -> list[Any]:
    """Every estimator inside a pipeline: its steps, a ColumnTransformer's fitted transformers,
    and theirs."""
    found = [model]
    for _, step in getattr(model, "steps", []):
        found += _steps(step)
    for _, fitted, _ in getattr(model, "transformers_", []):
        if not isinstance(fitted, str):  # "drop", "passthrough"
            found += _steps(fitted)
    return found


def _names(cols: Any) -> bool:
    return isinstance(cols, list) and all(isinstance(c, str) for c in cols)


def _plain(values: Any) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in np.asarray(values).ravel()]


def _max_diff(got: Any, want: Any) -> tuple[float, bool]:
    """The largest absolute difference, and whether every one is within the tolerance."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.size != want.size:
        return float("inf"), False
    diff = np.abs(got.reshape(want.shape) - want)
    within = bool(np.all(diff <= TOLERANCE + RTOL * np.abs(want)))  # False for NaN too
    return float(np.max(diff, initial=0.0)), within


def check_parity(model: Any, data: bytes, x: pd.DataFrame, numeric: list[str], which: str) -> Parity:
    """Compare the ONNX model `data` with the fitted `model` on the rows of `x`."""
    sess = session(data)
    inputs = [i.name for i in sess.get_inputs()]
    features = list(x.columns)
    if not onnxfile.fits(inputs, features, set(numeric)):
        reason = f"the ONNX graph has {len(inputs)} input(s) for {len(features)} feature(s)"
        return Parity(False, len(x), which, float("inf"), reason=reason)
    out = sess.run(None, frame_feeds(inputs, features, set(numeric), x))
    if hasattr(model, "classes_"):
        got, want = _plain(out[0]), _plain(model.predict(x))
        wrong = sum(g != w for g, w in zip(got, want, strict=True)) if len(got) == len(want) else len(x)
        diff, within = 0.0, True
        if hasattr(model, "predict_proba") and len(out) > 1:
            diff, within = _max_diff(out[1], model.predict_proba(x))
        if wrong:
            return Parity(False, len(x), which, diff, reason=f"{wrong} of {len(x)} labels differ")
    else:
        diff, within = _max_diff(out[0], model.predict(x))
    if not within:
        reason = (
            f"outputs differ by up to {diff:.3g}, more than the tolerance {TOLERANCE:g} + {RTOL:g} x |value|"
        )
        return Parity(False, len(x), which, diff, reason=reason)
    return Parity(True, len(x), which, diff)


def _skip(ctx: StageContext, reason: str) -> None:
    ctx.metric("onnx_exported", 0.0)
    print(f"model.onnx not stored, the server will use model.skops: {reason}", file=sys.stderr)


def export_onnx(ctx: StageContext, model: Any, test: pd.DataFrame, train: pd.DataFrame) -> None:
    """Store `model.onnx` beside the skops model when it converts and parity holds on `test`
    (on `train` if `test` has no rows); otherwise say why. Never raises for the export."""
    which, x = ("test", test) if len(test) else ("train", train)
    numeric = numeric_features(x)
    try:
        data = convert(model, x, numeric)
    except Exception as err:  # any converter failure means "serve skops"
        return _skip(ctx, f"skl2onnx cannot convert this pipeline: {type(err).__name__}: {err}")
    try:
        parity = check_parity(model, data, x, numeric, which)
    except Exception as err:  # a graph onnxruntime cannot run is not served
        return _skip(ctx, f"onnxruntime cannot run the converted model: {type(err).__name__}: {err}")
    ctx.metric("onnx_parity", float(parity.held))
    ctx.metric("onnx_max_abs_diff", parity.max_abs_diff)
    if not parity.held:
        return _skip(ctx, f"no parity on the {which} rows: {parity.reason}")
    path = ctx.out_path(FILENAME)
    path.write_bytes(data)
    inputs = [i.name for i in session(data).get_inputs()]
    classes = _plain(model.classes_) if hasattr(model, "classes_") else []
    ctx.write(
        OUTPUT_NAME,
        path,
        MEDIA_TYPE,
        features=list(x.columns),
        numeric=numeric,
        inputs=inputs,
        classes=classes,
        opset=OPSET,
        parity=asdict(parity),
    )
    ctx.metric("onnx_exported", 1.0)
    return None
