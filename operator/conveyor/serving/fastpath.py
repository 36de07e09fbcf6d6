"""The common V2 inference request, read without pydantic: one input per feature, each `FP64`
with shape `[n]` or `[n, 1]` and `n` flat finite floats (or nulls), `parameters` holding
scalars only. Such a body is exactly one that `protocol.parse_infer` and `protocol.v2_rows`
accept; reading it directly costs a tenth as much. Anything else (another datatype, nested
data, a row tensor, requested outputs, any mistake) is left to that validating path, so that
every error keeps its one wording there.
"""

from __future__ import annotations

from typing import Any

INPUT_KEYS = frozenset({"name", "shape", "datatype", "data", "parameters"})


def plain_v2_rows(body: Any, features: list[str]) -> tuple[list[dict[str, Any]], str | None] | None:
    """(rows, the request's id) for a plain FP64 request naming each of `features` once, else
    None: then the validating path must read the body."""
    if type(body) is not dict or body.get("outputs") is not None:
        return None
    request_id, parameters, inputs = body.get("id"), body.get("parameters"), body.get("inputs")
    if not (request_id is None or type(request_id) is str) or not _flat(parameters):
        return None
    if type(inputs) is not list or len(inputs) != len(features):
        return None
    columns: dict[str, list[Any]] = {}
    rows = -1
    for inp in inputs:
        data = _plain_column(inp, rows)
        if data is None:
            return None
        rows = len(data)
        columns[inp["name"]] = data
    if rows == 0 or len(columns) != len(features) or not all(f in columns for f in features):
        return None
    if rows == 1:
        return [{f: columns[f][0] for f in features}], request_id
    values = [columns[f] for f in features]
    return [dict(zip(features, row, strict=True)) for row in zip(*values, strict=True)], request_id


def _plain_column(inp: Any, rows: int) -> list[Any] | None:
    """The data of one plain input (of `rows` values, unless `rows` is -1), else None."""
    if type(inp) is not dict or inp.get("datatype") != "FP64":
        return None
    name, shape, data = inp.get("name"), inp.get("shape"), inp.get("data")
    if type(name) is not str or not name or type(data) is not list or type(shape) is not list:
        return None
    # With name, shape, datatype and data present, four keys are exactly those: no parameters.
    if len(inp) != 4 and not (INPUT_KEYS.issuperset(inp) and _flat(inp.get("parameters"))):
        return None
    n = len(data)
    if len(shape) == 1:
        if type(shape[0]) is not int or shape[0] != n:
            return None
    elif not (
        len(shape) == 2
        and type(shape[0]) is int
        and shape[0] == n
        and type(shape[1]) is int
        and shape[1] == 1
    ):
        return None
    if rows != -1 and n != rows:
        return None
    for value in data:
        if type(value) is not float and value is not None:  # JSON floats are finite (decode_json)
            return None
    return data


SCALARS = (str, int, float, bool)


def _flat(parameters: Any) -> bool:
    """None, or an object of scalars: with the checked shape of the rest, the body is then at
    most three levels deep (so the caller need not count its nesting)."""
    if parameters is None:
        return True
    return type(parameters) is dict and all(v is None or type(v) in SCALARS for v in parameters.values())
