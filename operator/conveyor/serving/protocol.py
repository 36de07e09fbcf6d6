"""The model server's request layer, with no I/O: a body's bytes to validated rows, or a
`BadInput` (a 400) saying what is wrong, where, and how to fix it.

Open Inference Protocol (V2 REST) requests and `/predict` bodies are checked here, per request,
before anything is batched: valid UTF-8, JSON nested at most `MAX_DEPTH` levels, finite numbers
(no `NaN`/`Infinity`, nothing beyond a 64-bit float), V2 `shape`s that are lists of
non-negative integers matching the data, known `datatype`s matching their values, rectangular
(not ragged) data, one scalar per feature value, and input names that are the model's
features. `null` is a missing value, as in training (the pipeline imputes it).
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.serving.model import BadInput, listing

MAX_DEPTH = 32
MAX_INT_DIGITS = 400  # CPython parses longer ones slowly, and none of them fits a float
FLOAT_MAX = sys.float_info.max
OUTPUT = "predict"
PREDICT_HINT = 'the body must be {"instances": [{feature: value, ...}, ...]}'
INFER_HINT = (
    'a V2 inference request is {"inputs": [{"name": ..., "shape": [...], "datatype": ..., '
    '"data": [...]}, ...]}; GET /v2/models/<name> lists the inputs'
)
FEEDBACK_HINT = (
    'feedback is {"ids": [prediction id, ...], "values": [true value, ...]}: the ids an earlier '
    "response gave (`ids` of /predict, or a V2 response's `id`, with `:<row>` after it when it "
    "held several rows) and, in the same order, what each should have been"
)
INT_RANGES = {
    **{f"INT{b}": (-(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in (8, 16, 32, 64)},
    **{f"UINT{b}": (0, 2**b - 1) for b in (8, 16, 32, 64)},
}
FLOAT_RANGES = {"FP16": 65504.0, "FP32": float(np.finfo(np.float32).max), "FP64": FLOAT_MAX}
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 opens, -1 (as int8) closes
M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class RequestInput(_Strict):
    name: str = Field(min_length=1)
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(_Strict):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Strict):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class PredictRequest(_Strict):
    instances: list[dict[str, Any]]


class FeedbackRequest(_Strict):
    model_config = ConfigDict(strict=True, extra="forbid")  # Conveyor's own: a stray key is a typo

    ids: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    values: list[Any]


# bytes -> JSON -------------------------------------------------------------------------------
def decode_json(body: bytes) -> Any:
    """The JSON value of a body: UTF-8, nested at most MAX_DEPTH levels, numbers finite."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(
            f"the body is not valid UTF-8 (byte {err.start} is {body[err.start : err.start + 1]!r}); "
            "send JSON encoded as UTF-8"
        ) from None
    depth = nesting_depth(body)
    if depth > MAX_DEPTH:
        raise BadInput(
            f"the body nests {depth} levels deep, over the limit of {MAX_DEPTH}; "
            "send inputs as flat lists or one level of rows"
        )
    try:
        return orjson.loads(body)  # the common body, read in C without a call per number
    except orjson.JSONDecodeError:
        pass  # not JSON, or a number orjson refuses: the checking reader below says which
    try:
        return json.loads(text, parse_constant=_constant, parse_int=_int, parse_float=_float)
    except BadInput:
        raise
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise BadInput(f"the body is not JSON: {err}; send a JSON object") from None


def quick_json(body: bytes) -> Any:
    """The body as orjson reads it, else None: no depth check and no explanation, for a caller
    that accepts only a shape it checks whole (`fastpath`) and otherwise calls `decode_json`."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def nesting_depth(body: bytes) -> int:
    """How deep arrays and objects nest, without recursion. Brackets are first counted in the
    raw text (fast); only if that is over the limit are strings removed and they are counted
    again, so brackets inside strings never cause a rejection. (Closing brackets inside strings
    can hide depth from the first count: the JSON parser's own recursion limit, also a 400, is
    the backstop, and nothing else walks free-form values.)"""
    depth = _bracket_depth(body)
    return _bracket_depth(_STRING.sub(b"", body)) if depth > MAX_DEPTH else depth


def _bracket_depth(text: bytes) -> int:
    steps = text.translate(_STEPS, _NOT_BRACKETS)
    opens = steps.count(1)
    if opens <= MAX_DEPTH:
        return opens  # an upper bound is enough
    return int(np.cumsum(np.frombuffer(steps, np.int8), dtype=np.int64).max())


def _constant(name: str) -> Any:
    raise BadInput(f"the body holds {name}; numbers must be finite: send null for a missing value")


def _int(text: str) -> int:
    if len(text) < 300:  # < 1e299: fits a float
        return int(text)
    value = int(text) if len(text) <= MAX_INT_DIGITS else None
    if value is None or abs(value) > FLOAT_MAX:
        raise BadInput(
            f"the body holds an integer of {len(text.lstrip('-'))} digits, beyond a 64-bit float; "
            "send numbers within ±1.8e308"
        )
    return value


def _float(text: str, isfinite: Any = math.isfinite) -> float:
    value = float(text)
    if not isfinite(value):
        raise BadInput(f"the number {text[:40]} overflows a 64-bit float; send numbers within ±1.8e308")
    return value


# JSON -> requests ----------------------------------------------------------------------------
def parse_predict(body: Any) -> list[dict[str, Any]]:
    """The rows of a `/predict` body, each value a scalar."""
    rows = _validate(PredictRequest, body, PREDICT_HINT).instances
    for i, row in enumerate(rows):
        _check_scalars(row, f"instances[{i}]")
    return rows


def parse_infer(body: Any) -> InferenceRequest:
    request = _validate(InferenceRequest, body, INFER_HINT)
    for i, out in enumerate(request.outputs or []):
        if out.name != OUTPUT:
            raise BadInput(f"outputs[{i}]: no output {out.name!r}; this model has one, {OUTPUT!r}")
    return request


def parse_feedback(body: Any, classes: list[Any], max_rows: int) -> FeedbackRequest:
    """Labels for earlier predictions: as many values as ids, at most `max_rows`; each value one
    of the model's classes (a classifier) or a finite number (a regressor)."""
    request = _validate(FeedbackRequest, body, FEEDBACK_HINT)
    if len(request.ids) > max_rows:
        raise BadInput(f"ids: {len(request.ids)} labels is over the limit of {max_rows}; split the request")
    if len(request.values) != len(request.ids):
        raise BadInput(
            f"values: {len(request.values)} value(s) for {len(request.ids)} id(s); send one true "
            "value per id, in the same order"
        )
    classes = [c.item() if hasattr(c, "item") else c for c in classes]  # numpy scalars: plain
    known = {(type(c), c) for c in classes}  # by type too: true is not the class 1
    for i, value in enumerate(request.values):
        if classes:
            if type(value) not in SCALAR_TYPES or (type(value), value) not in known:
                shown = ", ".join(map(repr, classes[:10]))
                raise BadInput(
                    f"values[{i}] is {_short(value, 30)}, not one of the model's classes ({shown}); "
                    "send the true class as the model predicts it"
                )
        elif type(value) not in (int, float):
            raise BadInput(
                f"values[{i}] is {_short(value, 30)} ({_kind(value)}); this model is a regressor: "
                "send the true value as a number"
            )
    return request


def _validate(model: type[M], body: Any, hint: str) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise BadInput(f"{explain(err)}; {hint}") from None


def explain(err: ValidationError, limit: int = 3) -> str:
    """Pydantic's errors as `where: what (got value)`, the first `limit` of them."""
    parts = []
    for e in err.errors(include_url=False)[:limit]:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        got = "" if e["type"] == "missing" else f" (got {_short(e.get('input'))})"
        parts.append(f"{where or 'the body'}: {e['msg']}{got}")
    more = err.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_scalars(row: dict[str, Any], where: str) -> None:
    for key, value in row.items():
        if type(value) not in SCALAR_TYPES:
            raise BadInput(
                f"{where}.{key} is {_kind(value)}; a feature value is one number, string, boolean or null"
            )


def _kind(value: Any) -> str:
    kinds: dict[type, str] = {dict: "an object", list: "a list"}
    return kinds.get(type(value), type(value).__name__)


# V2 tensors -> rows ----------------------------------------------------------------------------
def v2_rows(
    request: InferenceRequest, features: list[str], numeric: set[str] | frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Rows from a V2 inference request: one input per feature (named columns), or one
    [n, features] tensor in the model's feature order."""
    inputs = request.inputs
    names = [inp.name for inp in inputs]
    known = set(features)
    if len(inputs) == 1 and names[0] not in known:
        return _tensor_rows(inputs[0], features)
    if len(set(names)) != len(names) or len(names) != len(known) or not known.issuperset(names):
        _names_error(names, features)
    columns = {}
    for i, inp in enumerate(inputs):
        if len(inp.shape) not in (1, 2) or math.prod(inp.shape[1:]) != 1:
            raise BadInput(f"{_where(i, inp)}: a feature input has shape [n] or [n, 1], not {inp.shape}")
        if inp.name in numeric and inp.datatype in ("BYTES", "BOOL"):
            raise BadInput(f"{_where(i, inp)}: the feature is numeric; send it as FP64, not {inp.datatype}")
        columns[inp.name] = tensor_values(inp, i)
    if len({len(v) for v in columns.values()}) != 1:
        raise BadInput("inputs: every feature must have the same number of values (one per row)")
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _names_error(names: list[str], features: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    unknown = [n for n in names if n not in features]
    missing = [f for f in features if f not in names]
    for problem, which in (("duplicate", dupes), ("unknown", unknown), ("missing", missing)):
        if which:
            raise BadInput(
                f"inputs: {problem} feature(s) {listing(which, all_=problem == 'missing')}; send one "
                "input per feature, named as GET /v2/models/<name> lists them"
            )


def _where(i: int, inp: RequestInput) -> str:
    return f"inputs[{i}] ({inp.name!r})"


def _tensor_rows(inp: RequestInput, features: list[str]) -> list[dict[str, Any]]:
    width = len(features)
    if len(inp.shape) != 2 or inp.shape[1] != width:
        raise BadInput(
            f"inputs[0] ({inp.name!r}) is not a feature, so it is read as a row tensor, which "
            f"must have shape [n, {width}] and n*{width} values; or send one input per feature"
        )
    flat = tensor_values(inp, 0)
    return [dict(zip(features, flat[r * width : (r + 1) * width], strict=True)) for r in range(inp.shape[0])]


def tensor_values(inp: RequestInput, index: int) -> list[Any]:
    """An input's values, flat and row-major, checked against its shape and datatype."""
    flat = _flatten(inp.data, inp.shape, index, inp)
    expected = math.prod(inp.shape)
    if len(flat) != expected:
        raise BadInput(
            f"{_where(index, inp)}: shape {inp.shape} holds {expected} value(s) but `data` has "
            f"{len(flat)}; make the shape match the data"
        )
    _check_datatype(flat, inp.datatype, index, inp)
    return flat


def _flatten(data: list[Any], shape: list[int], index: int, inp: RequestInput) -> list[Any]:
    """Flat data as it is; nested data must follow the shape exactly (not ragged)."""
    if not any(type(v) is list for v in data):
        return data
    level: list[Any] = [data]
    for depth, size in enumerate(shape):
        nested: list[Any] = []
        for j, part in enumerate(level):
            if type(part) is not list or len(part) != size:
                got = f"{len(part)} values" if type(part) is list else _kind(part)
                raise BadInput(
                    f"{_where(index, inp)}: `data` is ragged: item {j} at depth {depth} has {got}, the shape "
                    f"{shape} says {size}; send a rectangular tensor, or the values flat"
                )
            nested.extend(part)
        level = nested
    return level


def _check_datatype(values: list[Any], datatype: str, index: int, inp: RequestInput) -> None:
    if datatype == "FP64" and all(type(v) is float for v in values):
        return  # the common case, fast: parsed floats are finite
    ok = _value_check(datatype)
    for j, value in enumerate(values):
        if value is not None and not ok(value):
            raise BadInput(
                f"{_where(index, inp)}.data[{j}] is {_short(value, 30)} ({_kind(value)}), not a "
                f"{datatype} value; send {_expected(datatype)}, or null for a missing one"
            )


def _value_check(datatype: str) -> Any:
    if datatype == "BYTES":
        return lambda v: type(v) is str
    if datatype == "BOOL":
        return lambda v: type(v) is bool
    if datatype in INT_RANGES:
        low, high = INT_RANGES[datatype]
        return lambda v: type(v) is int and low <= v <= high
    limit = FLOAT_RANGES[datatype]
    return lambda v: type(v) in (int, float) and -limit <= v <= limit


def _expected(datatype: str) -> str:
    if datatype in INT_RANGES:
        low, high = INT_RANGES[datatype]
        return f"integers in [{low}, {high}]"
    if datatype in FLOAT_RANGES:
        return f"numbers within ±{FLOAT_RANGES[datatype]:.4g}"
    return {"BYTES": "strings", "BOOL": "true or false"}[datatype]


# responses -----------------------------------------------------------------------------------
def datatype_of(values: list[Any]) -> str:
    """The V2 datatype of JSON values (numpy scalars read as their Python values)."""
    values = [v.item() if hasattr(v, "item") else v for v in values]
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def output_datatype(classes: list[Any]) -> str:
    """What `predict` returns: the classes' datatype for a classifier, FP64 for a regressor."""
    return datatype_of(classes) if classes else "FP64"
