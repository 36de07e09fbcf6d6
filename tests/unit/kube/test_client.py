"""The API client against a real HTTP server on 127.0.0.1 whose answers each test scripts:
what each verb tolerates, the typed errors, pages, token files, preconditions."""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from conveyor.errors import Conflict, ConveyorError, Gone, NotFound, Transient
from conveyor.kube.client import (
    JOBS,
    MERGE_PATCH,
    PIPELINERUNS,
    RETRY_DELAY,
    SERVICEMONITORS,
    ApiError,
    KubeClient,
)
from conveyor.kube.credentials import Connection


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    auth: str | None
    content_type: str


Answer = Callable[[Seen], web.Response]


def status(code: int, message: str = "", **extra: Any) -> web.Response:
    """An error answer as the API server writes it: a Status object."""
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}
    return web.json_response({**body, **extra}, status=code)


@dataclass
class Api:
    """Answers every request with `answer`, and records what it was asked."""

    answer: Answer = lambda _: web.json_response({})
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        text = await request.text()
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            json.loads(text) if text else None,
            request.headers.get("Authorization"),
            request.content_type,
        )
        self.seen.append(seen)
        return self.answer(seen)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    api = Api()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    api.url = str(server.make_url("")).rstrip("/")
    yield api
    await server.close()


@pytest.fixture
async def kube(api: Api) -> AsyncIterator[KubeClient]:
    client = KubeClient(Connection(server=api.url))
    yield client
    await client.close()


JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}
TERMINATING = status(
    403,
    'jobs.batch "j" is forbidden: '
    "unable to create new content in namespace ml because it is being terminated",
    reason="Forbidden",
    details={"causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}]},
)


async def call(kube: KubeClient, verb: str) -> Any:
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get": lambda: kube.get(JOBS, "ml", "j"),
        "list": lambda: kube.list(JOBS, "ml"),
        "create": lambda: kube.create(JOBS, "ml", dict(JOB)),
        "patch": lambda: kube.patch(JOBS, "ml", "j", {"spec": {"suspend": True}}),  # a lost update: 409
        "delete": lambda: kube.delete(JOBS, "ml", "j"),
        "serves": lambda: kube.serves(SERVICEMONITORS),
    }
    return await calls[verb]()


@pytest.mark.parametrize(
    ("verb", "answer", "expected"),
    [
        ("get", web.json_response(JOB), JOB),
        ("get", status(404), None),
        ("list", web.json_response({"items": [JOB], "metadata": {}}), [JOB]),
        ("list", web.Response(status=404, text="404 page not found\n"), []),
        ("create", web.json_response(JOB, status=201), True),
        ("create", status(409, "already exists", reason="AlreadyExists"), False),
        ("patch", web.json_response(JOB), JOB),
        ("patch", status(404), None),
        ("delete", web.json_response({"kind": "Status", "status": "Success"}), True),
        ("delete", status(404), False),
        ("serves", web.json_response({"resources": [{"name": "servicemonitors"}]}), True),
        ("serves", web.json_response({"resources": [{"name": "podmonitors"}]}), False),
        ("serves", web.Response(status=404, text="404 page not found\n"), False),
    ],
    ids=[
        "get-found",
        "get-404-is-None",
        "list",
        "list-404-group-not-served-is-empty",
        "create",
        "create-409-is-False",
        "patch",
        "patch-404-is-None",
        "delete",
        "delete-404-is-False",
        "serves",
        "serves-other-resources",
        "serves-plain-text-404-is-False",
    ],
)
async def test_what_each_verb_tolerates(
    api: Api, kube: KubeClient, verb: str, answer: web.Response, expected: Any
) -> None:
    api.answer = lambda _: answer
    assert await call(kube, verb) == expected


@pytest.mark.parametrize(
    ("verb", "answer", "error", "code"),
    [
        ("create", status(404, 'namespaces "ml" not found'), NotFound, 404),
        ("create", TERMINATING, Gone, 403),
        ("create", status(422, "metadata.name: Invalid value"), ApiError, 422),
        ("create", status(403, "forbidden: User cannot create jobs"), ApiError, 403),
        ("patch", status(409, "the object has been modified"), Conflict, 409),
        ("get", status(409), Conflict, 409),
        ("delete", status(500, "etcdserver: request timed out"), Transient, 500),
        ("list", status(429, "too many requests"), Transient, 429),
        ("get", status(401, "Unauthorized"), ApiError, 401),
    ],
    ids=[
        "create-404-namespace-gone-is-not-created",
        "create-in-terminating-namespace-is-Gone",
        "create-invalid",
        "create-forbidden-by-rbac-is-not-Gone",
        "patch-409-precondition-failed",
        "get-409",
        "delete-500",
        "list-429",
        "get-401-without-token-file",
    ],
)
async def test_what_no_verb_tolerates(
    api: Api, kube: KubeClient, verb: str, answer: web.Response, error: type[Exception], code: int
) -> None:
    api.answer = lambda _: answer
    with pytest.raises(error) as raised:
        await call(kube, verb)
    assert isinstance(raised.value, ApiError) and raised.value.status == code  # for the logs
    assert isinstance(raised.value, ConveyorError)
    if error is ApiError:  # not one of the kinds a caller decides on
        assert not isinstance(raised.value, NotFound | Conflict | Gone | Transient)


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({}, RETRY_DELAY),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, RETRY_DELAY),
    ],
    ids=["retry-after-seconds", "no-retry-after", "retry-after-date"],
)
async def test_503_is_transient_after_retry_after(
    api: Api, kube: KubeClient, headers: dict[str, str], delay: float
) -> None:
    api.answer = lambda _: web.json_response({"message": "unavailable"}, status=503, headers=headers)
    with pytest.raises(Transient) as raised:
        await kube.get(PIPELINERUNS, "ml", "r1")
    assert raised.value.delay == delay


async def test_no_answer_at_all_is_transient() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kube = KubeClient(Connection(server=f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(Transient):
            await kube.get(PIPELINERUNS, "ml", "r1")
    finally:
        await kube.close()


async def test_a_list_is_read_page_by_page(api: Api, kube: KubeClient) -> None:
    pages = {"": ("p2", ["a", "b"]), "p2": ("p3", ["c", "d"]), "p3": ("", ["e"])}

    def answer(seen: Seen) -> web.Response:
        token, names = pages[seen.query.get("continue", "")]
        items = [{"metadata": {"name": n, "labels": {"app": "x"}}} for n in names]
        return web.json_response({"items": items, "metadata": {"continue": token}})

    api.answer = answer
    items = await kube.list(JOBS, "ml", {"app": "x"})
    assert [i["metadata"]["name"] for i in items] == ["a", "b", "c", "d", "e"]
    assert [s.query for s in api.seen] == [
        {"labelSelector": "app=x", "limit": "500"},
        {"labelSelector": "app=x", "limit": "500", "continue": "p2"},
        {"labelSelector": "app=x", "limit": "500", "continue": "p3"},
    ]


async def test_a_patch_with_a_resource_version_carries_it(api: Api, kube: KubeClient) -> None:
    api.answer = lambda seen: web.json_response(seen.body)
    patch = {"metadata": {"labels": {"a": "b"}}, "spec": {"cancel": True}}
    await kube.patch(PIPELINERUNS, "ml", "r1", patch, resource_version="42")
    (seen,) = api.seen
    assert seen.content_type == MERGE_PATCH
    assert seen.body == {
        "metadata": {"labels": {"a": "b"}, "resourceVersion": "42"},
        "spec": {"cancel": True},
    }
    assert patch == {"metadata": {"labels": {"a": "b"}}, "spec": {"cancel": True}}  # the caller's, untouched


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def rotate(path: Path, token: str, same_mtime: bool) -> None:
    """Write a new token; with `same_mtime`, as if the clock's resolution hid the change."""
    before = path.stat()
    path.write_text(token + "\n")
    if same_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


@pytest.fixture
async def with_token_file(api: Api, tmp_path: Path) -> AsyncIterator[tuple[KubeClient, Path, Clock]]:
    token = tmp_path / "token"
    token.write_text("old\n")
    clock = Clock()
    static = {"Authorization": "Bearer static"}  # what the file's token replaces
    kube = KubeClient(Connection(api.url, static, token_file=str(token)), clock=clock)
    yield kube, token, clock
    await kube.close()


async def test_a_401_rereads_the_token_file_and_tries_once_more(
    api: Api, with_token_file: tuple[KubeClient, Path, Clock]
) -> None:
    kube, token, _ = with_token_file
    accepted = {"Bearer old"}
    api.answer = lambda seen: web.json_response(JOB) if seen.auth in accepted else status(401, "Unauthorized")
    assert await kube.get(JOBS, "ml", "j") == JOB
    rotate(token, "new", same_mtime=True)  # nothing tells the client but the 401
    accepted = {"Bearer new"}
    assert await kube.get(JOBS, "ml", "j") == JOB
    assert [s.auth for s in api.seen] == ["Bearer old", "Bearer old", "Bearer new"]


async def test_a_second_401_is_an_error_not_a_loop(
    api: Api, with_token_file: tuple[KubeClient, Path, Clock]
) -> None:
    kube, _, _ = with_token_file
    api.answer = lambda _: status(401, "Unauthorized")
    with pytest.raises(ApiError, match="401"):
        await kube.get(JOBS, "ml", "j")
    assert len(api.seen) == 2


@pytest.mark.parametrize(
    ("same_mtime", "seconds_later", "sent"),
    [(False, 0, "Bearer new"), (True, 61, "Bearer new"), (True, 30, "Bearer old")],
    ids=["file-changed", "same-mtime-a-minute-later", "same-mtime-within-the-minute"],
)
async def test_a_rotated_token_file_is_picked_up(
    api: Api,
    with_token_file: tuple[KubeClient, Path, Clock],
    same_mtime: bool,
    seconds_later: float,
    sent: str,
) -> None:
    kube, token, clock = with_token_file
    await kube.get(JOBS, "ml", "j")
    rotate(token, "new", same_mtime)
    clock.now += seconds_later
    await kube.get(JOBS, "ml", "j")
    assert [s.auth for s in api.seen] == ["Bearer old", sent]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_json_with_non_finite_numbers_is_never_sent(api: Api, kube: KubeClient, value: float) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        await kube.patch(PIPELINERUNS, "ml", "r1", {"status": {"metrics": {"auc": value}}}, sub="status")
    assert api.seen == []


async def test_an_event_about_an_object_with_a_long_name_has_a_valid_name(api: Api, kube: KubeClient) -> None:
    api.answer = lambda seen: web.json_response(seen.body, status=201)
    name = "r." + "a" * 251
    involved = {"apiVersion": "v1", "kind": "X", "metadata": {"name": name, "namespace": "ml"}}
    await kube.post_event(involved, "Normal", "Running", "started", datetime(2026, 1, 1, tzinfo=UTC))
    (seen,) = api.seen
    assert (seen.method, seen.path) == ("POST", "/api/v1/namespaces/ml/events")
    assert len(seen.body["metadata"]["name"]) <= 253
    assert seen.body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "X",
        "name": name,
        "namespace": "ml",
        "uid": None,
    }


async def test_an_event_where_the_namespace_is_gone_is_dropped(api: Api, kube: KubeClient) -> None:
    api.answer = lambda _: status(404, 'namespaces "ml" not found')
    involved = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "r", "namespace": "ml"}}
    await kube.post_event(involved, "Normal", "Running", "started", datetime(2026, 1, 1, tzinfo=UTC))
    assert len(api.seen) == 1
