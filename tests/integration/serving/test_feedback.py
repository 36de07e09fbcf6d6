"""Ground truth, in-process: every prediction response carries ids, labels sent for them later
feed the live quality gauges (equal to scikit-learn's metrics over the same pairs), unknown and
expired ids are reported, and every bad feedback body is a 4xx JSON error naming the field,
never a 500; the routes are counted like inference."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import accuracy_score, f1_score

from conveyor.serving.app import InferenceServer, ServeOptions
from conveyor.serving.model import ServedModel, resolve_uri
from conveyor.serving.monitor import DriftMonitor
from tests.integration.serving.conftest import SERVER_ID, Client
from tests.integration.serving.test_bad_input import requests

MODEL = "breast-cancer"
FEEDBACK = f"/v2/models/{MODEL}/feedback"


async def make_client(trained: dict[str, str], **options: Any) -> tuple[Client, InferenceServer]:
    model = ServedModel.load(resolve_uri(trained["model"]))
    monitor = DriftMonitor(model.name, model.version, model.profile, window=200, min_samples=10)
    server = InferenceServer(
        model, monitor, ServeOptions(max_rows=50, max_body_bytes=64_000, drift_interval=60, **options)
    )
    return Client(server), server


@pytest_asyncio.fixture
async def client(trained: dict[str, str]) -> AsyncIterator[tuple[Client, InferenceServer]]:
    c, server = await make_client(trained, feedback_window=100, quality_window=40)
    async with c:
        yield c, server


def rows(features: Any, start: int, n: int) -> list[dict[str, Any]]:
    return list(features.iloc[start : start + n].to_dict(orient="records"))


def gauges(text: str, model: str = MODEL) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model") != model:
                continue
            if s.name == "conveyor_model_quality":
                out[s.labels["metric"]] = s.value
            elif s.name == "conveyor_quality_samples":
                out["samples"] = s.value
    return out


async def test_predictions_carry_ids_and_labels_feed_the_quality_gauges(
    client: tuple[Client, InferenceServer], features: Any
) -> None:
    c, server = client
    resp = await c.post("/predict", json={"instances": rows(features, 0, 30)})
    body = await resp.json()
    assert resp.status == 200 and len(body["ids"]) == 30 == len(set(body["ids"]))
    assert body["ids"] == [f"{body['id']}:{i}" for i in range(30)]
    ids, preds = body["ids"], body["predictions"]
    one = {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": rows(features, 30, 1)[0]}]}
    one["inputs"][0]["data"] = list(one["inputs"][0]["data"].values())  # type: ignore[index]
    v2 = await (await c.post(f"/v2/models/{MODEL}/infer", json=one)).json()
    assert isinstance(v2["id"], str) and SERVER_ID.fullmatch(v2["id"])  # none given: one of ours
    named = await (await c.post(f"/v2/models/{MODEL}/infer", json={**one, "id": "req-7"})).json()
    assert named["id"] == "req-7"

    # labels: the first 20 right, the next 10 wrong, and the V2 ones by their response ids
    truth = [*preds[:20], *(1 - p for p in preds[20:])]
    v2_truth = [v2["outputs"][0]["data"][0], 1 - named["outputs"][0]["data"][0]]
    resp = await c.post(FEEDBACK, json={"ids": [*ids, v2["id"], "req-7"], "values": truth + v2_truth})
    assert (resp.status, await resp.json()) == (
        200,
        {"accepted": 32, "unknown": [], "model": MODEL, "version": server.model.version},
    )
    quality = server.quality.compute()
    predicted = [*preds, v2["outputs"][0]["data"][0], named["outputs"][0]["data"][0]]
    labels = truth + v2_truth
    assert quality["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert quality["f1"] == pytest.approx(f1_score(labels, predicted))
    shown = gauges(await (await c.get("/metrics")).text())
    assert shown == {"accuracy": quality["accuracy"], "f1": quality["f1"], "samples": 32}

    # a label is taken once; an id never given is reported, nothing else happens
    resp = await c.post("/feedback", json={"ids": [ids[0], "never"], "values": [0, 1]})
    assert (await resp.json())["unknown"] == [ids[0], "never"]
    assert server.quality.compute()["accuracy"] == quality["accuracy"]


async def test_the_quality_is_over_the_last_window_and_old_ids_expire(
    client: tuple[Client, InferenceServer], features: Any
) -> None:
    c, server = client
    first = await (await c.post("/predict", json={"instances": rows(features, 0, 50)})).json()
    rest = [
        await (await c.post("/predict", json={"instances": rows(features, 50 + 50 * i, 50)})).json()
        for i in range(2)
    ]
    # 150 predictions through a 100-id window: the first 50 expired
    resp = await c.post(FEEDBACK, json={"ids": first["ids"][:5], "values": first["predictions"][:5]})
    assert (await resp.json())["accepted"] == 0
    latest = rest[1]
    wrong = [1 - p for p in latest["predictions"]]
    await c.post(FEEDBACK, json={"ids": rest[0]["ids"][:30], "values": rest[0]["predictions"][:30]})
    await c.post(FEEDBACK, json={"ids": latest["ids"][:40], "values": wrong[:40]})
    # the labelled window holds 40: the wrong ones only
    assert server.quality.compute()["accuracy"] == 0.0
    assert gauges(await (await c.get("/metrics")).text())["samples"] == 40


BAD = [
    ("not-json", b"{", 400, "not JSON"),
    ("no-ids", {"values": [1]}, 400, "ids: Field required"),
    ("empty-ids", {"ids": [], "values": []}, 400, "ids: List should have at least 1 item"),
    ("id-not-a-string", {"ids": [5], "values": [1]}, 400, "ids[0]: Input should be a valid string"),
    ("empty-id", {"ids": [""], "values": [1]}, 400, "ids[0]: String should have at least 1 character"),
    ("extra-field", {"ids": ["a"], "values": [1], "x": 1}, 400, "x: Extra inputs are not permitted"),
    ("fewer-values", {"ids": ["a", "b"], "values": [1]}, 400, "values: 1 value(s) for 2 id(s)"),
    ("unknown-class", {"ids": ["a"], "values": [7]}, 400, "values[0] is 7, not one of the model's classes"),
    ("bool-is-not-a-class", {"ids": ["a"], "values": [True]}, 400, "values[0] is True, not one of"),
    ("string-class", {"ids": ["a"], "values": ["1"]}, 400, "values[0] is '1', not one of"),
    ("null-label", {"ids": ["a"], "values": [None]}, 400, "values[0] is None, not one of"),
    ("list-label", {"ids": ["a"], "values": [[1]]}, 400, "values[0] is [1], not one of"),
    ("too-many", {"ids": [str(i) for i in range(51)], "values": [0] * 51}, 400, "ids: 51 labels is over"),
    ("nan", b'{"ids": ["a"], "values": [NaN]}', 400, "numbers must be finite"),
    ("too-large", {"ids": ["a" * 70_000], "values": [0]}, 413, "over 64000 bytes"),
]


@pytest.mark.parametrize(("body", "status", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_feedback_is_a_4xx_naming_the_field(
    client: tuple[Client, InferenceServer], body: Any, status: int, says: str
) -> None:
    c, _ = client
    before = requests(str(status), "feedback")
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await c.post(FEEDBACK, data=data, headers={"Content-Type": "application/json"})
    answer = await resp.json()
    assert resp.status == status and says in answer["error"], answer
    assert requests(str(status), "feedback") == before + 1
    assert requests(None, "feedback") == 0


async def test_feedback_names_the_model(client: tuple[Client, InferenceServer]) -> None:
    c, _ = client
    resp = await c.post("/v2/models/other/feedback", json={"ids": ["a"], "values": [0]})
    assert resp.status == 404 and "this server serves 'breast-cancer'" in (await resp.json())["error"]
    resp = await c.get(FEEDBACK)
    assert resp.status == 405 and "use POST" in (await resp.json())["error"]


async def test_a_zero_feedback_window_remembers_nothing(trained: dict[str, str], features: Any) -> None:
    c, _ = await make_client(trained, feedback_window=0)
    async with c:
        body = await (await c.post("/predict", json={"instances": rows(features, 0, 1)})).json()
        assert body["ids"] == [body["id"]]  # one row: the response's id is the prediction's
        answer = await (await c.post(FEEDBACK, json={"ids": body["ids"], "values": [0]})).json()
        assert answer["unknown"] == body["ids"]
