"""The model server's HTTP/1.1 layer on a real socket: routing, keep-alive and pipelining in
order, limits (413 by length and by chunks, 431, 408 then close), `Expect: 100-continue`, HEAD,
HTTP/1.0 and bytes that are not HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from conveyor.serving.http import (
    MAX_HEAD_BYTES,
    HttpError,
    Request,
    Respond,
    Response,
    Router,
    Server,
    json_response,
)


def echo(request: Request) -> Response:
    return json_response(
        {
            "method": request.method,
            "path": request.path,
            "params": request.params,
            "body": request.body.decode(),
            "ua": request.headers.get("user-agent"),
        }
    )


def reject(request: Request, err: HttpError) -> Response:
    headers = {"Allow": ", ".join(err.allow)} if err.allow else None
    return Response(
        err.status,
        json.dumps({"status": err.status, "path": request.path}).encode(),
        headers,
        close=err.status == 408,
    )


@pytest_asyncio.fixture
async def port() -> AsyncIterator[int]:
    router = Router()
    router.add("POST", "/echo", echo)
    router.add("GET", "/items/{name}", echo)
    router.add("POST", "/items/{name}", echo)

    def handle(request: Request, respond: Respond) -> None:
        """Answers at once, as the model server answers an error; `/items/slow` later than the
        request after it arrives, as it answers a prediction."""
        try:
            handler, request.params = router.resolve(request.method, request.path)
        except HttpError as err:
            respond(reject(request, err))
            return
        if request.params.get("name") == "boom":
            raise RuntimeError("the application broke")
        if request.params.get("name") == "slow":
            asyncio.get_running_loop().call_later(0.05, lambda: respond(handler(request)))
        else:
            respond(handler(request))

    server = Server(handle, reject, max_body_bytes=100, body_timeout=0.3)
    listening = await server.start("127.0.0.1", 0)
    yield listening.sockets[0].getsockname()[1]
    listening.close()
    server.close()


async def exchange(port: int, data: bytes, until_closed: bool = False, reads: int = 1) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 2)
            out += chunk
            if not chunk or (not until_closed and out.count(b"HTTP/1.1 ") >= reads and _complete(out, reads)):
                break
    finally:
        writer.close()
    return out


def _complete(out: bytes, reads: int) -> bool:
    """Whether `out` holds `reads` whole responses (by their Content-Length)."""
    rest = out
    for _ in range(reads):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        if len(rest) < length:
            return False
        rest = rest[length:]
    return True


def bodies(out: bytes) -> list[tuple[int, dict[str, Any], bytes]]:
    """(status, JSON body, head) of each response in `out`."""
    found, rest = [], out
    while rest.startswith(b"HTTP/1.1 "):
        head, _, rest = rest.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        found.append((int(head.split()[1]), json.loads(rest[:length]) if length else {}, head))
        rest = rest[length:]
    return found


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [("GET", "/items/a%20b", {"name": "a%20b"}), ("POST", "/items/x", {"name": "x"}), ("POST", "/echo", {})],
    ids=["pattern-get", "pattern-post", "exact"],
)
def test_routes_resolve_with_their_params(method: str, path: str, params: dict[str, str]) -> None:
    router = Router()
    router.add("POST", "/echo", echo)
    router.add("GET", "/items/{name}", echo)
    router.add("POST", "/items/{name}", echo)
    handler, found = router.resolve(method, path)
    assert handler is echo and found == params


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/echo", 405, ("POST",)),
        ("DELETE", "/items/a", 405, ("GET", "POST")),
        ("GET", "/nope", 404, ()),
        ("GET", "/items/a/b", 404, ()),
    ],
    ids=["wrong-method-exact", "wrong-method-pattern", "no-route", "no-deeper-segment"],
)
def test_unrouted_requests_raise_what_to_answer(
    method: str, path: str, status: int, allow: tuple[str, ...]
) -> None:
    router = Router()
    router.add("POST", "/echo", echo)
    router.add("GET", "/items/{name}", echo)
    router.add("POST", "/items/{name}", echo)
    with pytest.raises(HttpError) as err:
        router.resolve(method, path)
    assert err.value.status == status and err.value.allow == allow


async def test_pipelined_requests_are_answered_in_order_on_one_connection(port: int) -> None:
    out = await exchange(
        port, post("/items/slow", b"1") + post("/items/fast", b"2") + post("/echo", b"3"), reads=3
    )
    answers = bodies(out)
    assert [(s, b["path"], b["body"]) for s, b, _ in answers] == [
        (200, "/items/slow", "1"),
        (200, "/items/fast", "2"),
        (200, "/echo", "3"),
    ]
    assert all(b"Connection: close" not in head for _, _, head in answers)  # kept alive


async def test_an_application_that_fails_to_answer_gets_its_500_and_the_connection_goes_on(
    port: int,
) -> None:
    out = await exchange(port, post("/items/boom", b"1") + post("/echo", b"2"), reads=2)
    assert [(s, b["path"]) for s, b, _ in bodies(out)] == [(500, "/items/boom"), (200, "/echo")]


async def test_a_body_over_the_limit_is_413_by_length_and_by_chunks(port: int) -> None:
    by_length = bodies(await exchange(port, post("/echo", b"x" * 101), until_closed=True))
    chunks = b"".join(b"%x\r\n%s\r\n" % (40, b"y" * 40) for _ in range(3)) + b"0\r\n\r\n"
    chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    by_chunks = bodies(await exchange(port, chunked, until_closed=True))
    for answers in (by_length, by_chunks):
        assert [(s, b["path"]) for s, b, _ in answers] == [(413, "/echo")]
        assert b"Connection: close" in answers[0][2]
    small = b"a\r\n0123456789\r\n0\r\n\r\n"
    ok = bodies(
        await exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + small)
    )
    assert ok[0][0] == 200 and ok[0][1]["body"] == "0123456789"


async def test_headers_over_the_limit_are_431(port: int) -> None:
    huge = f"X-Big: {'h' * MAX_HEAD_BYTES}\r\n"
    answers = bodies(await exchange(port, post("/echo", b"1", huge), until_closed=True))
    assert [s for s, _, _ in answers] == [431]


async def test_a_body_that_stops_coming_is_408_and_the_connection_closes(port: int) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = await exchange(port, post("/echo", b"12345")[:-2], until_closed=True)  # 2 bytes never come
    assert [(s, b["path"]) for s, b, _ in bodies(out)] == [(408, "/echo")]
    assert loop.time() - started >= 0.3


async def test_expect_100_continue_is_answered_before_the_body(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"ok")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 200 OK")
    writer.close()


async def test_head_has_no_body_and_http_1_0_closes(port: int) -> None:
    out = await exchange(
        port, b"HEAD /items/a HTTP/1.1\r\nHost: x\r\n\r\nGET /items/b HTTP/1.0\r\n\r\n", until_closed=True
    )
    first, _, rest = out.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"Content-Length: " in first
    assert rest.startswith(b"HTTP/1.1 200")  # the HEAD answer carried no body
    second = bodies(rest)
    assert second[0][1]["params"] == {"name": "b"} and b"Connection: close" in second[0][2]


async def test_bytes_that_are_not_http_are_400_and_close(port: int) -> None:
    answers = bodies(await exchange(port, b"\x00\x01 nonsense\r\n\r\n", until_closed=True))
    assert [s for s, _, _ in answers] == [400]
