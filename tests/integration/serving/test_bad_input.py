"""Bad input never makes the model server answer 500: each class of bad request is a 4xx with a
JSON error naming the problem, counted by code; a bad request fails alone even when batched with
good ones; unexpected errors are a counted 500 with a request id; routes, 404s, 405s and
metadata follow the Open Inference Protocol (V2 REST)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from conveyor.serving.app import InferenceServer, ServeOptions
from conveyor.serving.model import ServedModel, resolve_uri
from conveyor.serving.monitor import REGISTRY, DriftMonitor
from conveyor.serving.protocol import output_datatype
from tests.integration.serving.conftest import Client

MODEL = "breast-cancer"
INFER = f"/v2/models/{MODEL}/infer"
X = "__X__"  # where a raw JSON literal goes into a body


@pytest_asyncio.fixture
async def client(trained: dict[str, str]) -> AsyncIterator[Client]:
    model = ServedModel.load(resolve_uri(trained["model"]))
    monitor = DriftMonitor(model.name, model.version, model.profile, window=200, min_samples=10)
    server = InferenceServer(
        model, monitor, ServeOptions(max_rows=50, max_body_bytes=64_000, drift_interval=60)
    )
    async with Client(server) as c:
        c.served = model  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def row(features: Any) -> dict[str, Any]:
    return dict(features.iloc[0].to_dict())


def requests(code: str | None = None, endpoint: str | None = None) -> float:
    """conveyor_requests_total for the model: one code (or every 5xx when None), one endpoint or all."""
    return sum(
        s.value
        for family in REGISTRY.collect()
        if family.name == "conveyor_requests"
        for s in family.samples
        if s.name == "conveyor_requests_total"
        and s.labels["model"] == MODEL
        and (s.labels["code"] == code if code else s.labels["code"].startswith("5"))
        and (endpoint is None or s.labels["endpoint"] == endpoint)
    )


def raw(body: Any, literal: str) -> bytes:
    """JSON of `body` with the string X replaced by a raw literal (Infinity, 1e999, ...)."""
    return json.dumps(body).replace(f'"{X}"', literal).encode()


def instances(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"instances": [{**row, **changes}]}


def columns(row: dict[str, Any], first: dict[str, Any] | None = None) -> dict[str, Any]:
    """A V2 request, one FP64 input per feature; `first` changes inputs[0] ('mean radius')."""
    inputs = [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in row.items()]
    inputs[0].update(first or {})
    return {"inputs": inputs}


def tensor(rows: list[list[Any]], shape: list[int] | None = None) -> dict[str, Any]:
    shape = shape or [len(rows), len(rows[0])]
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": rows}]}


Body = Callable[[dict[str, Any]], bytes]
PREDICT = "/predict"


def with_literal(literal: str) -> Body:
    """A /predict body whose `mean area` is a raw JSON literal."""
    return lambda r: raw(instances(r, **{"mean area": X}), literal)


def with_value(value: Any) -> Body:
    return lambda r: json.dumps(instances(r, **{"mean area": value})).encode()


def first_input(**changes: Any) -> Body:
    """A V2 body whose inputs[0] ('mean radius') is changed."""
    return lambda r: json.dumps(columns(r, changes)).encode()


def v2(make: Callable[[list[dict[str, Any]]], Any]) -> Body:
    """A V2 body made from the valid inputs."""
    return lambda r: json.dumps(make(columns(r)["inputs"])).encode()


DEEP = {"p": json.loads("[" * 40 + "]" * 40)}
RAGGED = [2, 30]
# fmt: off
BAD: list[tuple[str, str, Body, dict[str, str], int, str]] = [
    ("invalid-utf8", PREDICT, lambda r: with_value("\xff")(r).replace(b"\\u00ff", b"\xff"), {}, 400,
     "not valid UTF-8"),
    ("not-json", PREDICT, lambda r: b"{not json", {}, 400, "not JSON"),
    ("deep-nesting", PREDICT, lambda r: b"[" * 20_000 + b"]" * 20_000, {}, 400, "nests 20000 levels deep"),
    ("deep-nesting-in-parameters", INFER, v2(lambda i: {"inputs": i, "parameters": DEEP}), {}, 400,
     "over the limit of 32"),
    ("int-5000-digits", PREDICT, with_literal("9" * 5000), {}, 400, "integer of 5000 digits"),
    ("int-1001-digits", PREDICT, with_literal("1" + "0" * 1000), {}, 400, "integer of 1001 digits"),
    ("infinity", PREDICT, with_literal("Infinity"), {}, 400, "Infinity; numbers must be finite"),
    ("minus-infinity", PREDICT, with_literal("-Infinity"), {}, 400, "-Infinity; numbers must be finite"),
    ("nan", PREDICT, with_literal("NaN"), {}, 400, "NaN; numbers must be finite"),
    ("overflowing-float", PREDICT, with_literal("1e999"), {}, 400, "1e999 overflows a 64-bit float"),
    ("v2-infinity", INFER, lambda r: raw(columns(r, {"data": [X]}), "Infinity"), {}, 400, "must be finite"),
    ("shape-negative", INFER, first_input(shape=[-5]), {}, 400,
     "inputs[0].shape[0]: Input should be greater than or equal to 0"),
    ("shape-not-a-list", INFER, first_input(shape="1"), {}, 400,
     "inputs[0].shape: Input should be a valid list"),
    ("shape-float", INFER, first_input(shape=[1.5]), {}, 400,
     "inputs[0].shape[0]: Input should be a valid integer"),
    ("shape-bool", INFER, first_input(shape=[True]), {}, 400,
     "inputs[0].shape[0]: Input should be a valid integer"),
    ("shape-not-the-data-length", INFER, first_input(shape=[3]), {}, 400,
     "shape [3] holds 3 value(s) but `data` has 1"),
    ("feature-shape-not-a-column", INFER, first_input(shape=[1, 1, 2]), {}, 400, "has shape [n] or [n, 1]"),
    ("datatype-unknown", INFER, first_input(datatype="FOO"), {}, 400,
     "inputs[0].datatype: Input should be 'BOOL'"),
    ("datatype-not-the-values", INFER, first_input(datatype="INT8"), {}, 400,
     "inputs[0] ('mean radius').data[0] is 17.99 (float), not a INT8 value"),
    ("datatype-out-of-range", INFER, first_input(datatype="INT8", data=[300]), {}, 400,
     "not a INT8 value; send integers in [-128, 127]"),
    ("datatype-bytes-for-numeric", INFER, first_input(datatype="BYTES"), {}, 400,
     "the feature is numeric; send it as FP64, not BYTES"),
    ("ragged-data", INFER, lambda r: json.dumps(tensor([[*r.values()], [*r.values()][:29]], RAGGED)).encode(),
     {}, 400, "`data` is ragged: item 1 at depth 1 has 29 values, the shape [2, 30] says 30"),
    ("dict-as-value", PREDICT, with_value({"a": 1}), {}, 400,
     "instances[0].mean area is an object; a feature value is one number"),
    ("list-as-value", PREDICT, with_value([1, 2]), {}, 400, "instances[0].mean area is a list"),
    ("dict-in-v2-data", INFER, first_input(data=[{"a": 1}]), {}, 400,
     "data[0] is {'a': 1} (an object), not a FP64 value"),
    ("missing-input", INFER, v2(lambda i: {"inputs": i[1:]}), {}, 400, "missing feature(s) 'mean radius'"),
    ("unknown-input", INFER, v2(lambda i: {"inputs": [*i, i[0] | {"name": "colour"}]}), {}, 400,
     "unknown feature(s) 'colour'"),
    ("duplicate-input", INFER, v2(lambda i: {"inputs": [*i, i[0]]}), {}, 400,
     "duplicate feature(s) 'mean radius'"),
    ("one-unknown-column", INFER, v2(lambda i: {"inputs": [i[0] | {"name": "x"}]}), {}, 400,
     "is not a feature, so it is read as a row tensor"),
    ("unknown-output", INFER, v2(lambda i: {"inputs": i, "outputs": [{"name": "proba"}]}), {}, 400,
     "outputs[0]: no output 'proba'"),
    ("id-not-a-string", INFER, v2(lambda i: {"inputs": i, "id": 5}), {}, 400,
     "id: Input should be a valid string"),
    ("no-inputs", INFER, lambda r: b'{"inputs": []}', {}, 400, "inputs: List should have at least 1 item"),
    ("body-not-an-object", INFER, lambda r: b"[1, 2]", {}, 400,
     "the body: Input should be a valid dictionary"),
    ("predict-not-an-object", PREDICT, lambda r: b'"x"', {}, 400, '{"instances": [{feature: value'),
    ("binary-tensor-extension", INFER, lambda r: b"\x00" * 16, {"Inference-Header-Content-Length": "0"}, 400,
     "binary_data=False"),
    ("body-too-large", PREDICT, lambda r: json.dumps({"instances": [r] * 200}).encode(), {}, 413,
     "the body is over 64000 bytes"),
]
# fmt: on


@pytest.mark.parametrize(
    ("path", "make", "headers", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
async def test_bad_input_is_a_counted_4xx_naming_the_problem(
    client: Client,
    row: dict[str, Any],
    path: str,
    make: Body,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    endpoint = "infer" if path == INFER else "predict"
    errors, counted = requests(), requests(str(status), endpoint)
    resp = await client.post(path, data=make(row), headers={"Content-Type": "application/json", **headers})
    assert resp.status == status and resp.content_type == "application/json"
    assert message in (await resp.json())["error"]
    assert requests() == errors, "a bad request must not be a 5xx"
    assert requests(str(status), endpoint) == counted + 1


async def test_a_dict_as_a_categorical_value_is_a_400(
    client: Client, row: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    served: ServedModel = client.served  # type: ignore[attr-defined]
    monkeypatch.setattr(served, "numeric", served.numeric - {"mean area"})  # as if it were categorical
    for value in ({"a": 1}, ["a"]):
        resp = await client.post(PREDICT, json=instances(row, **{"mean area": value}))
        assert resp.status == 400 and "instances[0].mean area is a" in (await resp.json())["error"]


async def test_every_missing_feature_is_named(client: Client, row: dict[str, Any]) -> None:
    kept = dict(list(row.items())[:5])  # 25 of the 30 features missing
    resp = await client.post(PREDICT, json={"instances": [kept]})
    error = (await resp.json())["error"]
    assert resp.status == 400
    assert all(f in error for f in row if f not in kept), error
    columns = {
        "inputs": [{"name": f, "datatype": "FP64", "shape": [1], "data": [v]} for f, v in kept.items()]
    }
    error = (await (await client.post(INFER, json=columns)).json())["error"]
    assert all(repr(f) in error for f in row if f not in kept), error
    extra = {**row, **{f"x{i}": 1.0 for i in range(9)}}
    error = (await (await client.post(PREDICT, json={"instances": [extra]})).json())["error"]
    assert "x0, x1, x2, x3, x4 and 4 more" in error


async def test_a_poisoned_request_fails_alone(
    client: Client, features: Any, monkeypatch: pytest.MonkeyPatch, trained: dict[str, str]
) -> None:
    served: ServedModel = client.served  # type: ignore[attr-defined]
    batches = _slow(served, monkeypatch)
    rows = features.head(8).to_dict(orient="records")
    poisons = [
        raw(instances(rows[0], **{"mean area": X}), "Infinity"),
        json.dumps(instances(rows[0], **{"mean area": {"a": 1}})).encode(),
        raw(columns(rows[0], {"data": [X]}), "NaN"),
    ]
    calls = [client.post(PREDICT, json={"instances": [r]}) for r in rows]
    calls[2:2] = [client.post(INFER if b"inputs" in p else PREDICT, data=p) for p in poisons]
    responses = await asyncio.gather(*calls)
    statuses = [r.status for r in responses]
    assert statuses == [200, 200, 400, 400, 400, 200, 200, 200, 200, 200, 200]
    good = [r for r in responses if r.status == 200]
    pipeline = ServedModel.load(resolve_uri(trained["model"]), "skops").estimator
    expected = pipeline.predict(features.head(8)).tolist()
    assert [(await r.json())["predictions"][0] for r in good] == expected
    assert max(batches) > 1, "the valid requests were not batched: the test shows nothing"


def _slow(served: ServedModel, monkeypatch: pytest.MonkeyPatch, fail_on: float | None = None) -> list[int]:
    """Make `predict` slow (so requests queue and batch) and raise on a row whose `mean
    radius` is `fail_on`; returns the batch sizes seen."""
    original, sizes = served.predict, []

    def predict(rows: list[dict[str, Any]]) -> list[Any]:
        sizes.append(len(rows))
        time.sleep(0.05)
        if any(r["mean radius"] == fail_on for r in rows):
            raise RuntimeError("the model broke")
        return original(rows)

    monkeypatch.setattr(served, "predict", predict)
    return sizes


async def test_an_unexpected_error_is_a_counted_500_with_a_request_id_and_fails_alone(
    client: Client, features: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    served: ServedModel = client.served  # type: ignore[attr-defined]
    batches = _slow(served, monkeypatch, fail_on=999.0)
    rows = features.head(6).to_dict(orient="records")
    rows[3]["mean radius"] = 999.0
    errors = requests()
    with caplog.at_level(logging.ERROR, logger="conveyor.serving"):
        responses = await asyncio.gather(*(client.post(PREDICT, json={"instances": [r]}) for r in rows))
    assert [r.status for r in responses] == [200, 200, 200, 500, 200, 200]
    body = await responses[3].json()
    assert body["request_id"] in body["error"] and responses[3].headers["X-Request-Id"] == body["request_id"]
    assert requests() == errors + 1
    record = next(r for r in caplog.records if body["request_id"] in r.getMessage())
    assert record.exc_info and "the model broke" in str(record.exc_info[1])
    assert max(batches) > 1


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", PREDICT, "POST"),
        ("GET", INFER, "POST"),
        ("POST", "/v2", "GET"),
        ("DELETE", "/v2/health/ready", "GET"),
    ],
    ids=["get-predict", "get-infer", "post-server-metadata", "delete-health"],
)
async def test_a_wrong_method_is_405_with_allow(client: Client, method: str, path: str, allow: str) -> None:
    resp = await client.request(method, path)
    assert resp.status == 405 and allow in resp.headers["Allow"].split(", ")
    assert f"use {resp.headers['Allow']}" in (await resp.json())["error"]


NOT_FOUND = [
    ("GET", "/v2/models/nope", "no model 'nope'"),
    ("GET", "/v2/models/nope/ready", "no model 'nope'"),
    ("POST", "/v2/models/nope/infer", "no model 'nope'"),
    ("GET", f"/v2/models/{MODEL}/versions/v0", "has no version 'v0'"),
    ("GET", f"/v2/models/{MODEL}/versions/v0/ready", "has no version 'v0'"),
    ("POST", f"/v2/models/{MODEL}/versions/v0/infer", "has no version 'v0'"),
    ("GET", "/v3/anything", "no route /v3/anything"),
]


@pytest.mark.parametrize(("method", "path", "message"), NOT_FOUND, ids=[p for _, p, _ in NOT_FOUND])
async def test_unknown_models_versions_and_routes_are_404(
    client: Client, row: dict[str, Any], method: str, path: str, message: str
) -> None:
    resp = await client.request(method, path, json=columns(row) if method == "POST" else None)
    assert resp.status == 404 and message in (await resp.json())["error"]


async def test_routes_with_a_version(client: Client, row: dict[str, Any]) -> None:
    served: ServedModel = client.served  # type: ignore[attr-defined]
    base = f"/v2/models/{MODEL}/versions/{served.version}"
    meta = await (await client.get(base)).json()
    assert meta["name"] == MODEL and meta["versions"] == [served.version]
    ready = await client.get(base + "/ready")
    assert ready.status == 200 and (await ready.json())["ready"] is True
    resp = await client.post(base + "/infer", json={**columns(row), "id": "r1"})
    body = await resp.json()
    assert resp.status == 200 and body["id"] == "r1" and body["model_version"] == served.version
    assert (await client.get(f"/v2/models/{MODEL}/ready")).status == 200
    server = await (await client.get("/v2")).json()
    assert server["name"] == "conveyor" and isinstance(server["extensions"], list)


async def test_metadata_says_the_datatype_predictions_have(client: Client, row: dict[str, Any]) -> None:
    meta = await (await client.get(f"/v2/models/{MODEL}")).json()
    body = await (await client.post(INFER, json=columns(row))).json()
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert body["outputs"][0]["datatype"] == "INT64" and isinstance(body["outputs"][0]["data"][0], int)
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}


@pytest.mark.parametrize(
    ("classes", "datatype"),
    [
        (list(np.array([0, 1])), "INT64"),
        (list(np.array([0.0, 1.0])), "FP64"),
        (list(np.array(["a", "b"], dtype=object)), "BYTES"),
        (list(np.array(["a", "b"])), "BYTES"),
        (list(np.array([False, True])), "BOOL"),
        ([], "FP64"),
    ],
    ids=["int-classes", "float-classes", "object-classes", "str-classes", "bool-classes", "regressor"],
)
def test_output_datatype(classes: list[Any], datatype: str) -> None:
    assert output_datatype(classes) == datatype
