"""The API client: what it sends, and what it refuses to send."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.kube.client import PIPELINERUNS, SERVICEMONITORS, Connection, KubeClient
from tests.unit.kube.fakeapi import FakeApi, FakeClient


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_json_with_non_finite_numbers_is_never_sent(value: float) -> None:
    api = FakeApi()
    api.put("pipelineruns", {"metadata": {"name": "r1", "namespace": "ml"}})
    kube = FakeClient(api)
    with pytest.raises(ValueError, match="JSON compliant"):
        await kube.patch(PIPELINERUNS, "ml", "r1", {"status": {"metrics": {"auc": value}}}, sub="status")
    assert api.calls == []


async def test_create_says_whether_it_created() -> None:
    api = FakeApi()
    kube = FakeClient(api)
    body = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "PipelineRun", "metadata": {"name": "r1"}}
    assert await kube.create(PIPELINERUNS, "ml", dict(body)) is True
    assert await kube.create(PIPELINERUNS, "ml", dict(body)) is False


async def test_an_event_about_an_object_with_a_long_name_has_a_valid_name() -> None:
    api = FakeApi()
    involved = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "r." + "a" * 251, "namespace": "ml"}}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    await FakeClient(api).post_event(involved, "Normal", "Running", "started", now)
    (event,) = api.of("events")
    assert len(event["metadata"]["name"]) <= 253
    assert event["involvedObject"]["name"] == involved["metadata"]["name"]


class _PlainText:
    """What a real API server answers for an API group it does not serve."""

    status = 404
    closed = False

    async def text(self) -> str:
        return "404 page not found\n"

    async def __aenter__(self) -> _PlainText:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def request(self, *_: object, **__: object) -> _PlainText:
        return self


async def test_an_api_group_that_is_not_served_is_a_plain_text_404() -> None:
    class Client(KubeClient):
        async def _http(self) -> Any:
            return _PlainText()

    kube = Client(Connection(server="https://k8s"))
    assert await kube.serves(SERVICEMONITORS) is False
    assert await kube.get(SERVICEMONITORS, "ml", "m") is None
