"""The common V2 inference request, read without pydantic: one input per feature, each `FP64`
with shape `[n]` or `[n, 1]` and `n` flat finite floats (or nulls), `parameters` holding
scalars only. Such a body is exactly one that `protocol.parse_infer` and `protocol.v2_rows`
accept; reading it directly costs a tenth as much. Anything else (another datatype, nested
data, a row tensor, requested outputs, any mistake) is left to that validating path, so that
every error keeps its one wording there.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

INPUT_KEYS = frozenset({"name", "shape", "datatype", "data", "parameters"})
VALUE_TYPES = frozenset({float, type(None)})


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
    names: list[str] = []
    columns: list[list[Any]] = []
    rows = -1
    for inp in inputs:  # one loop, no call per input: this runs for every request
        if type(inp) is not dict:
            return None
        name, shape, data = inp.get("name"), inp.get("shape"), inp.get("data")
        if inp.get("datatype") != "FP64" or type(name) is not str or type(data) is not list:
            return None
        # With name, shape, datatype and data present, four keys are exactly those: no parameters.
        if len(inp) != 4 and not (INPUT_KEYS.issuperset(inp) and _flat(inp.get("parameters"))):
            return None
        n = len(data)
        if rows == -1:
            rows = n
        if n != rows or type(shape) is not list or type(shape[0] if shape else None) is not int:
            return None
        if shape[0] != n or not (len(shape) == 1 or (shape[1:] == [1] and type(shape[1]) is int)):
            return None  # the shape is [n] or [n, 1], of ints (not bools, not floats)
        names.append(name)
        columns.append(data)
    if rows <= 0 or not VALUE_TYPES.issuperset(map(type, [v for data in columns for v in data])):
        return None  # JSON floats are finite (decode_json), so a float here is a valid value
    if names != features:  # named in another order (or not each once)
        by_name = dict(zip(names, columns, strict=True))
        if len(by_name) != len(features) or by_name.keys() != set(features):
            return None
        columns = [by_name[f] for f in features]
    if rows == 1:
        return [dict(zip(features, [data[0] for data in columns], strict=True))], request_id
    return [dict(zip(features, row, strict=True)) for row in zip(*columns, strict=True)], request_id


def row_values(rows: list[dict[str, Any]], names: list[str]) -> list[Any]:
    """Each row's values of `names`, in order (one sequence per row; KeyError for a row without
    one): what the ONNX feed and the drift window build their [rows, names] arrays from, picked
    by one `itemgetter` (a C loop) rather than a comprehension per row."""
    if len(names) == 1:  # itemgetter of one name gives the value, not a sequence
        return [[row[names[0]]] for row in rows]
    return list(map(itemgetter(*names), rows))


SCALARS = (str, int, float, bool)


def _flat(parameters: Any) -> bool:
    """None, or an object of scalars: with the checked shape of the rest, the body is then at
    most three levels deep (so the caller need not count its nesting)."""
    if parameters is None:
        return True
    return type(parameters) is dict and all(v is None or type(v) in SCALARS for v in parameters.values())
