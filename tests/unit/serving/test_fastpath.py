"""The plain V2 request read without pydantic: the same rows as the validating path, and every
other body left to that path (so its errors keep their wording)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from conveyor.serving.fastpath import plain_v2_rows
from conveyor.serving.model import BadInput
from conveyor.serving.protocol import decode_json, parse_infer, v2_rows

FEATURES = ["a", "b", "c"]


def body(rows: int = 2) -> dict[str, Any]:
    return {
        "id": "req-1",
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": f, "datatype": "FP64", "shape": [rows], "data": [float(i + j) for j in range(rows)]}
            for i, f in enumerate(reversed(FEATURES))  # inputs in any order, named
        ],
    }


def slow(value: Any) -> tuple[list[dict[str, Any]], str | None]:
    request = parse_infer(value)
    return v2_rows(request, FEATURES, set(FEATURES)), request.id


@pytest.mark.parametrize("rows", [1, 3])
def test_plain_request_reads_as_the_validating_path_does(rows: int) -> None:
    value = decode_json(json.dumps(body(rows)).encode())
    assert plain_v2_rows(value, FEATURES) == slow(value)


def test_nulls_and_shape_n_by_1_and_no_id() -> None:
    value = body(2)
    del value["id"]
    value["inputs"][0]["data"][1] = None
    value["inputs"][1]["shape"] = [2, 1]
    assert plain_v2_rows(value, FEATURES) == slow(value)


def _set(path: str, new: Any) -> Callable[[dict[str, Any]], None]:
    def change(value: dict[str, Any]) -> None:
        *where, last = path.split(".")
        target: Any = value
        for key in where:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = new

    return change


ELSEWHERE = {  # each a body the plain reader must leave to the validating path
    "int-data": _set("inputs.0.data.0", 3),
    "string-data": _set("inputs.0.data.0", "3"),
    "bool-data": _set("inputs.0.data.0", True),
    "nested-data": _set("inputs.0.data", [[1.0], [2.0]]),
    "fp32": _set("inputs.0.datatype", "FP32"),
    "bad-datatype": _set("inputs.0.datatype", "FOO"),
    "shape-mismatch": _set("inputs.0.shape", [3]),
    "negative-shape": _set("inputs.0.shape", [-2]),
    "bool-shape": _set("inputs.0.shape", [True, 1]),
    "shape-n-by-2": _set("inputs.0.shape", [1, 2]),
    "ragged-lengths": _set("inputs.1.data", [1.0, 2.0, 3.0]),
    "duplicate-name": _set("inputs.1.name", "c"),
    "unknown-name": _set("inputs.1.name", "z"),
    "empty-name": _set("inputs.1.name", ""),
    "id-number": _set("id", 7),
    "parameters-list": _set("parameters", [1]),
    "input-parameters-list": _set("inputs.0.parameters", [1]),
    # the fast path skips the nesting count, so it must take no nested value at all
    "nested-parameters": _set("parameters", {"deep": [[[1]]]}),
    "nested-input-parameters": _set("inputs.0.parameters", {"deep": {"x": {}}}),
    "outputs-requested": _set("outputs", [{"name": "nope"}]),
    "inputs-not-list": _set("inputs", {"a": 1}),
    "no-rows": lambda v: [inp.update(shape=[0], data=[]) for inp in v["inputs"]],
    "missing-input": lambda v: v["inputs"].pop(),
}


@pytest.mark.parametrize("change", ELSEWHERE.values(), ids=ELSEWHERE.keys())
def test_anything_else_is_left_to_the_validating_path(change: Callable[[dict[str, Any]], None]) -> None:
    value = body(2)
    change(value)
    assert plain_v2_rows(value, FEATURES) is None


@pytest.mark.parametrize("value", [None, [], "x", {"inputs": []}, {}])
def test_not_a_request_is_left_to_the_validating_path(value: Any) -> None:
    assert plain_v2_rows(value, FEATURES) is None
    with pytest.raises(BadInput):
        slow(value)


def test_random_plain_requests_read_the_same() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        value = body(int(rng.integers(1, 6)))
        for inp in value["inputs"]:
            inp["data"] = [None if rng.random() < 0.1 else float(rng.normal()) for _ in inp["data"]]
        rng.shuffle(value["inputs"])
        assert plain_v2_rows(copy.deepcopy(value), FEATURES) == slow(value)
