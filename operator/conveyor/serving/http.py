"""The model server's HTTP/1.1 layer: httptools parses, an asyncio Protocol answers.

Why not aiohttp (which served until issue 11's speed work): importing it cost a third of the
server's start-up (its client module builds TLS contexts from the CA bundle at import), and its
request machinery more CPU per request than the prediction. A model server needs little of it:
routes by method and path, a body with a size limit (413) and a time limit (408, then the
connection is closed), keep-alive and pipelining in order, `Expect: 100-continue`, and JSON
answers. The application answers a request by calling `respond` once, at once or later
(`Handle`): the common request is answered by a callback in the turn of the event loop that
predicted it, with no task per request. What a failure answers is the application's
(`Server.reject`), so every error keeps one wording and one count.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools
import orjson

log = logging.getLogger("conveyor.serving")
MAX_HEAD_BYTES = 64 << 10  # request line and headers together
IDLE_TIMEOUT = 75.0  # seconds a kept-alive connection may wait for its next request
TICK = 0.1  # seconds between looks at the connections' deadlines (a timer each cost more)


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)  # from the route's {placeholders}


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] | None = None
    content_type: str = "application/json"
    close: bool = False  # close the connection once sent


class HttpError(Exception):
    """A failure of the request itself (no route, wrong method, too large, too slow,
    unparsable), answered by `Server.reject`."""

    def __init__(self, status: int, allow: tuple[str, ...] = ()) -> None:
        super().__init__(HTTPStatus(status).phrase)
        self.status, self.allow = status, allow


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, orjson.dumps(value), headers)


Respond = Callable[[Response], None]
Handle = Callable[[Request, Respond], None]  # the application: calls respond once, now or later
Handler = Callable[..., Any]  # what a route leads to: the application's


class Router:
    """Routes by exact path first (a dict lookup), then by pattern; `{name}` matches one path
    segment. HEAD is served by a route's GET handler."""

    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Handler]] = {}
        self.patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        if "{" not in path:
            self.exact.setdefault(path, {})[method] = handler
            return
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")
        for known, handlers in self.patterns:
            if known.pattern == regex.pattern:
                handlers[method] = handler
                return
        self.patterns.append((regex, {method: handler}))

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        handlers, params = self.exact.get(path), {}
        if handlers is None:
            for regex, candidates in self.patterns:
                match = regex.match(path)
                if match is not None:
                    handlers, params = candidates, match.groupdict()
                    break
            else:
                raise HttpError(404)
        handler = handlers.get("GET" if method == "HEAD" else method)
        if handler is None:
            raise HttpError(405, tuple(sorted(handlers)))
        return handler, params


class Service(Protocol):
    async def start(self, host: str, port: int, reuse_port: bool = False) -> asyncio.Server: ...

    async def stop(self) -> None: ...


def run_until_signalled(service: Service, host: str, port: int, reuse_port: bool = False) -> None:
    """Start `service` on a new event loop (uvloop when it is installed: faster) and stop it
    when SIGINT or SIGTERM comes."""
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_until_signalled(service, host, port, reuse_port))
    finally:
        loop.close()


async def _until_signalled(service: Service, host: str, port: int, reuse_port: bool) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    listening = await service.start(host, port, reuse_port)
    try:
        await stopped.wait()
    finally:
        listening.close()
        await service.stop()


@functools.lru_cache(maxsize=64)
def _head_start(status: int, content_type: str) -> bytes:
    """A response's status line and Content-Type header (a handful of distinct pairs)."""
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n".encode(
        "latin-1"
    )


class Server:
    """What a connection needs from the application: its handler, its answer to a failed
    request, and the limits."""

    def __init__(
        self,
        handle: Handle,
        reject: Callable[[Request, HttpError], Response],
        max_body_bytes: int,
        body_timeout: float,
    ) -> None:
        self.handle, self.reject = handle, reject
        self.max_body_bytes, self.body_timeout = max_body_bytes, body_timeout
        self.connections: set[Connection] = set()
        self.ticker: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        listening = await loop.create_server(
            lambda: Connection(self), host, port, reuse_port=reuse_port or None, backlog=1024
        )
        self.ticker = loop.call_later(TICK, self._tick)
        return listening

    def close(self) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
        for connection in list(self.connections):
            connection.close()

    def _tick(self) -> None:
        """Act on the deadlines that passed (body too slow, connection idle)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in [c for c in self.connections if c.deadline is not None and c.deadline <= now]:
            connection.deadline = None
            connection.on_deadline()
        self.ticker = loop.call_later(TICK, self._tick)


class Connection(asyncio.Protocol):
    """One client connection: requests are parsed as bytes arrive and answered in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[Request, bool]] = deque()  # (request, keep-alive)
        self.busy = False  # from a request's hand-over to the application to its last answer
        self.waiting = False  # the application has the first pending request
        self.answering = False  # within `Server.handle`
        self.closing = False
        self.reading = False  # between a request's first byte and its end
        self.deadline: float | None = None  # when `on_deadline` is due (Server._tick)
        self.on_deadline: Callable[[], None] = self._idle
        self._new_message()

    # connection events -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)
        self._arm(IDLE_TIMEOUT, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._disarm()
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpError(400))
        except httptools.HttpParserError:
            self._fail(HttpError(400))

    # parser callbacks --------------------------------------------------------------------------
    def _new_message(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.head_bytes = self.body_bytes = 0

    def on_message_begin(self) -> None:
        self._new_message()
        self.reading = True
        self._arm(self.server.body_timeout, self._too_slow)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._count_head(len(name) + len(value))

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.server.max_body_bytes:
            self._fail(HttpError(413))
        elif self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.body_bytes > self.server.max_body_bytes:  # chunked bodies have no length up front
            self._fail(HttpError(413))
        elif not self.closing:
            self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        self.reading = False
        self._disarm()
        request = self._request(b"".join(self.body))
        self.pending.append((request, self.parser.should_keep_alive()))
        if not self.busy:
            self._answer()

    # answering ---------------------------------------------------------------------------------
    def _answer(self) -> None:
        """Hand the pending requests to the application in order, one at a time: the next
        once the last is answered (pipelined requests are answered in the order they came)."""
        self.busy = True
        while self.pending and not self.closing and not self.waiting:
            request = self.pending[0][0]
            self.waiting = True
            self.answering = True  # a `respond` within `handle` leaves the looping to this one
            try:
                self.server.handle(request, self._respond)
            except Exception:  # the application's own failure: answered as its 500
                log.exception("answering %s %s failed", request.method, request.path)
                self._respond(self.server.reject(request, HttpError(500)))
            finally:
                self.answering = False
        if self.waiting and not self.closing:
            return
        self.busy = False
        if not self.closing and not self.reading:  # a request being read keeps its own timer
            self._arm(IDLE_TIMEOUT, self._idle)

    def _respond(self, response: Response) -> None:
        if not self.waiting:  # a second answer to one request: the first one stands
            return
        request, keep_alive = self.pending.popleft()
        self.waiting = False
        self._send(request, response, close=response.close or not keep_alive)
        if not self.answering:
            self._answer()

    def _send(self, request: Request, response: Response, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        lines = [f"Content-Length: {len(response.body)}"]
        lines.extend(f"{k}: {v}" for k, v in (response.headers or {}).items())
        if close:
            lines.append("Connection: close")
        head = _head_start(response.status, response.content_type) + ("\r\n".join(lines) + "\r\n\r\n").encode(
            "latin-1"
        )
        self.transport.write(head if request.method == "HEAD" else head + response.body)
        if close:
            self.closing = True
            self.transport.close()

    def _request(self, body: bytes) -> Request:
        url = httptools.parse_url(self.url) if self.url else None
        path = url.path.decode("latin-1") if url is not None and url.path else "/"
        method = self.parser.get_method().decode("latin-1") if self.url else "GET"
        return Request(method, path, self.headers, body)

    def _fail(self, err: HttpError) -> None:
        """Answer a request that cannot be read to its end, and close the connection (the rest
        of it may never come, or is not worth reading)."""
        if self.closing:
            return
        self._disarm()
        try:
            request = self._request(b"")
        except (httptools.HttpParserError, UnicodeDecodeError):
            request = Request("GET", "/")
        response = self.server.reject(request, err)
        self._send(request, response, close=True)

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self._fail(HttpError(431))

    # timers ------------------------------------------------------------------------------------
    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self.deadline = asyncio.get_running_loop().time() + seconds
        self.on_deadline = callback

    def _disarm(self) -> None:
        self.deadline = None

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _too_slow(self) -> None:
        self._fail(HttpError(408))

    def _idle(self) -> None:
        if not self.busy and not self.pending and self.transport is not None:
            self.closing = True
            self.transport.close()
