"""The HTTP layer: decode, delegate, encode. Open Inference Protocol (V2) REST, `/predict`,
health, `/metrics`. Requests are validated one by one (`protocol`) before they are batched;
predictions run in one worker thread so the event loop keeps accepting connections; drift is
computed in the background. Every prediction gets an id (a V2 response's `id`, the `ids` of a
`/predict` response); labels sent for them (`.../feedback`) feed the live quality gauges.
Every failure is a JSON `{"error": ...}`; every response to an inference or feedback endpoint
is counted by code, 5xx included."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conveyor.errors import NotFound, UserError
from conveyor.serving.batcher import Batcher
from conveyor.serving.fastpath import plain_v2_rows
from conveyor.serving.model import BadInput, ServedModel
from conveyor.serving.monitor import (
    LATENCY,
    MODEL_BACKEND,
    PREDICTIONS,
    REQUESTS,
    DriftMonitor,
    exposition_registry,
)
from conveyor.serving.protocol import (
    OUTPUT,
    decode_json,
    output_datatype,
    parse_feedback,
    parse_infer,
    parse_predict,
    v2_rows,
)
from conveyor.serving.quality import QualityMonitor, new_request_id, prediction_ids

__all__ = ["Batcher", "InferenceServer", "ServeOptions", "serve", "v2_rows"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("conveyor.serving")
ROUTES = (
    "/v2[/], /v2/health/{live,ready}, /v2/models/{name}[/versions/{version}][/ready|/infer|/feedback], "
    "/predict, /feedback, /metrics"
)
BINARY_HEADER = "Inference-Header-Content-Length"
REQUEST_ID = re.compile(r"[\w.-]{1,64}")


@dataclass
class ServeOptions:
    max_rows: int = 1000
    max_body_bytes: int = 1 << 20
    drift_interval: float = 2.0
    batching: bool = True
    max_batch_size: int = 32
    max_latency_ms: float = 0.0  # 0: take what queued while the model was busy, never wait
    body_timeout: float = 10.0  # seconds to receive a whole request body, else 408
    feedback_window: int = 10000  # predictions remembered by id, awaiting their label
    quality_window: int = 1000  # labelled predictions the live quality is computed from


class InferenceServer:
    def __init__(
        self,
        model: ServedModel,
        monitor: DriftMonitor,
        options: ServeOptions,
        quality: QualityMonitor | None = None,
    ) -> None:
        self.model, self.monitor, self.options = model, monitor, options
        self.quality = quality or QualityMonitor(
            model.name, model.version, model.classes, options.feedback_window, options.quality_window
        )
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self.batcher = (
            Batcher(model, self.pool, options.max_batch_size, options.max_latency_ms / 1000)
            if options.batching
            else None
        )
        self.output_datatype = output_datatype(model.classes)
        self.ready = False
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._predictions: dict[str, Any] = {}  # class -> its PREDICTIONS child

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.max_body_bytes, middlewares=[self._errors])
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            app.add_routes(
                [
                    web.get(prefix, self.model_metadata),
                    web.get(prefix + "/ready", self.model_ready),
                    web.post(prefix + "/infer", self.infer),
                    web.post(prefix + "/feedback", self.feedback),
                ]
            )
        app.add_routes(
            [
                web.get("/v2/health/live", self.live),
                web.get("/v2/health/ready", self.readyz),
                web.get("/healthz", self.live),
                web.get("/readyz", self.readyz),
                web.get("/v2", self.server_metadata),
                web.get("/v2/", self.server_metadata),  # the path in the official OpenAPI file
                web.post("/predict", self.predict),
                web.post("/feedback", self.feedback),
                web.get("/metrics", self.metrics),
            ]
        )
        app.cleanup_ctx.append(self._background)
        REQUESTS.labels(self.model.name, "predict", "200")  # expose the series from the start
        return app

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self._drift_loop())]
        if self.batcher is not None:
            tasks.append(asyncio.create_task(self.batcher.run()))
        MODEL_BACKEND.labels(self.model.name, self.model.version, self.model.backend).set(1)
        self.ready = True
        yield
        self.ready = False
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.pool.shutdown(wait=False)

    async def _drift_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.options.drift_interval)
            await loop.run_in_executor(None, self.monitor.compute)
            await loop.run_in_executor(None, self.quality.compute)

    # errors and counting -----------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        endpoint = path.rpartition("/")[2] if path.endswith(("/infer", "/feedback")) else ""
        endpoint = "predict" if path == "/predict" else endpoint
        started = time.perf_counter()
        try:
            response = await handler(request)
        except Exception as err:  # web.HTTPException too: every failure answers JSON
            response = self._error_response(request, err)
        if endpoint:
            self._count(endpoint, response.status, time.perf_counter() - started)
        return response

    def _count(self, endpoint: str, status: int, seconds: float) -> None:
        """One response in the request metrics (their children looked up once per label set)."""
        key = (endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                REQUESTS.labels(self.model.name, endpoint, str(status)),
                LATENCY.labels(self.model.name, endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def _error_response(self, request: web.Request, err: Exception) -> web.StreamResponse:
        """One place maps errors to statuses: 400, 404, 405, 413, other 4xx, else 500."""
        if isinstance(err, UserError):
            return _json_error(str(err), 400)
        if isinstance(err, NotFound):
            return _json_error(str(err), 404)
        if isinstance(err, web.HTTPRequestEntityTooLarge):
            limit = self.options.max_body_bytes
            return _json_error(f"the body is over {limit} bytes; send fewer rows per request", 413)
        if isinstance(err, web.HTTPRequestTimeout):
            response = _json_error(
                f"the request body did not arrive within {self.options.body_timeout:g} s; "
                "send the whole body at once, or fewer rows per request",
                408,
            )
            response.force_close()  # the rest of the body may never come: do not wait for it
            return response
        if isinstance(err, web.HTTPMethodNotAllowed):
            allow = ", ".join(sorted(err.allowed_methods))
            message = f"{request.method} is not allowed on {request.path}; use {allow}"
            return _json_error(message, 405, {"Allow": allow})
        if isinstance(err, web.HTTPNotFound):
            return _json_error(f"no route {request.path}; the routes are {ROUTES}", 404)
        if isinstance(err, web.HTTPException) and err.status < 500:
            return _json_error(err.reason, err.status)
        given = request.headers.get("X-Request-Id", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        log.error("request %s: %s %s failed", request_id, request.method, request.path, exc_info=err)
        return web.json_response(
            {
                "error": f"internal error (request id {request_id}); the server logged its cause: "
                "report the id to the model's operators",
                "request_id": request_id,
            },
            status=500,
            headers={"X-Request-Id": request_id},
        )

    # health and metadata -----------------------------------------------------------------------
    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def readyz(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": self.ready}, status=200 if self.ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        from conveyor import __version__

        return web.json_response({"name": "conveyor", "version": __version__, "extensions": []})

    def _check_name(self, request: web.Request) -> None:
        """404 unless the path names this model (and, if it names one, its version)."""
        name, version = request.match_info["model"], request.match_info.get("version")
        if name != self.model.name:
            raise NotFound(f"no model {name!r}; this server serves {self.model.name!r}")
        if version is not None and version != self.model.version:
            raise NotFound(
                f"model {name!r} has no version {version!r}; this server serves version "
                f"{self.model.version!r}"
            )

    async def model_ready(self, request: web.Request) -> web.Response:
        self._check_name(request)
        return web.json_response(
            {"name": self.model.name, "ready": self.ready}, status=200 if self.ready else 503
        )

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._check_name(request)
        m = self.model
        return web.json_response(
            {
                "name": m.name,
                "versions": [m.version],
                "platform": "sklearn",
                "inputs": [
                    {"name": f, "datatype": "FP64" if f in m.numeric else "BYTES", "shape": [-1]}
                    for f in m.features
                ],
                "outputs": [{"name": OUTPUT, "datatype": self.output_datatype, "shape": [-1]}],
                "parameters": {"task": m.task, "sha256": m.sha256, "backend": m.backend},
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(exposition_registry()), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # inference ---------------------------------------------------------------------------------
    async def _json(self, request: web.Request) -> Any:
        if BINARY_HEADER in request.headers:
            raise BadInput(
                f"binary tensor data (the {BINARY_HEADER} header) is not supported; send JSON: "
                "with tritonclient, set_data_from_numpy(..., binary_data=False) and "
                "InferRequestedOutput(..., binary_data=False)"
            )
        try:
            async with asyncio.timeout(self.options.body_timeout):
                body = await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout() from None
        return decode_json(body)

    async def predict(self, request: web.Request) -> web.Response:
        rows = parse_predict(await self._json(request))
        request_id = new_request_id()
        preds = await self._run(rows, request_id)
        return web.json_response(
            {
                "predictions": preds,
                "ids": prediction_ids(request_id, len(preds)),
                "id": request_id,
                "model": self.model.name,
                "version": self.model.version,
            }
        )

    async def infer(self, request: web.Request) -> web.Response:
        self._check_name(request)
        body = await self._json(request)
        plain = plain_v2_rows(body, self.model.features)
        if plain is None:  # anything but the common request: validated, and explained if wrong
            parsed = parse_infer(body)
            rows, given = v2_rows(parsed, self.model.features, self.model.numeric), parsed.id
        else:
            rows, given = plain
        request_id = given or new_request_id()  # the client's, else one of ours: always one
        preds = await self._run(rows, request_id)
        out: dict[str, Any] = {
            "id": request_id,
            "model_name": self.model.name,
            "model_version": self.model.version,
            "outputs": [
                {"name": OUTPUT, "shape": [len(preds)], "datatype": self.output_datatype, "data": preds}
            ],
        }
        return web.json_response(out)

    async def feedback(self, request: web.Request) -> web.Response:
        """Labels for earlier predictions, by id: the accepted count, the unknown ids (never
        predicted here, expired from the feedback window, or labelled already)."""
        if "model" in request.match_info:
            self._check_name(request)
        body = parse_feedback(await self._json(request), self.model.classes, self.options.max_rows)
        result = self.quality.label(body.ids, body.values)
        return web.json_response(
            {
                "accepted": result.accepted,
                "unknown": result.unknown,
                "model": self.model.name,
                "version": self.model.version,
            }
        )

    async def _run(self, rows: list[dict[str, Any]], request_id: str) -> list[Any]:
        if not rows:
            raise BadInput("no rows: send at least one instance")
        if len(rows) > self.options.max_rows:
            raise BadInput(
                f"{len(rows)} rows is over the limit of {self.options.max_rows}; split the request"
            )
        self.model.validate(rows)
        if self.batcher is not None:
            preds = await self.batcher.predict(rows)
        else:
            preds = await asyncio.get_running_loop().run_in_executor(self.pool, self.model.predict, rows)
        self.monitor.observe(rows, preds)
        self.quality.observe(prediction_ids(request_id, len(preds)), preds)
        if self.model.classes:
            for label in map(str, preds):
                counter = self._predictions.get(label)
                if counter is None:
                    counter = PREDICTIONS.labels(self.model.name, self.model.version, label)
                    self._predictions[label] = counter
                counter.inc()
        else:
            PREDICTIONS.labels(self.model.name, self.model.version, "").inc(len(preds))
        return preds


def serve(server: InferenceServer, host: str, port: int, reuse_port: bool = False) -> None:
    """Serve until interrupted, on uvloop when it is installed (a faster event loop)."""
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(
        server.app(), host=host, port=port, print=None, access_log=None, reuse_port=reuse_port, loop=loop
    )


def _json_error(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)
