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
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conveyor.errors import NotFound, UserError
from conveyor.serving.batcher import Batcher
from conveyor.serving.fastpath import plain_v2_rows
from conveyor.serving.http import (
    MAX_HEAD_BYTES,
    HttpError,
    Request,
    Response,
    Router,
    Server,
    json_response,
    run_until_signalled,
)
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
    quick_json,
    v2_rows,
)
from conveyor.serving.quality import QualityMonitor, new_request_id, prediction_ids

__all__ = ["Batcher", "InferenceServer", "ServeOptions", "serve", "v2_rows"]

log = logging.getLogger("conveyor.serving")
ROUTES = (
    "/v2[/], /v2/health/{live,ready}, /v2/models/{name}[/versions/{version}][/ready|/infer|/feedback], "
    "/predict, /feedback, /metrics"
)
BINARY_HEADER = "inference-header-content-length"  # as the headers are kept: lower case
MAX_HEAD_KIB = MAX_HEAD_BYTES >> 10
ENDPOINTS = frozenset({"predict", "infer", "feedback"})  # the counted ones
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
            Batcher(
                model,
                self.pool,
                options.max_batch_size,
                options.max_latency_ms / 1000,
                inline=model.backend == "onnx",
                observe=monitor.observe,
            )
            if options.batching
            else None
        )
        self.output_datatype = output_datatype(model.classes)
        self.ready = False
        self.routes = self.router()
        self._tasks: list[asyncio.Task[None]] = []
        self.http: Server | None = None
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._predictions: dict[str, Any] = {}  # class -> its PREDICTIONS child

    def router(self) -> Router:
        routes = Router()
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes.add("GET", prefix, self.model_metadata)
            routes.add("GET", prefix + "/ready", self.model_ready)
            routes.add("POST", prefix + "/infer", self.infer)
            routes.add("POST", prefix + "/feedback", self.feedback)
        for path in ("/v2/health/live", "/healthz"):
            routes.add("GET", path, self.live)
        for path in ("/v2/health/ready", "/readyz"):
            routes.add("GET", path, self.readyz)
        for path in ("/v2", "/v2/"):  # "/v2/": the path in the official OpenAPI file
            routes.add("GET", path, self.server_metadata)
        routes.add("POST", "/predict", self.predict)
        routes.add("POST", "/feedback", self.feedback)
        routes.add("GET", "/metrics", self.metrics)
        return routes

    async def start(self, host: str, port: int, reuse_port: bool = False) -> asyncio.Server:
        """Listen on host:port, start the drift loop (and the batcher), and say ready."""
        self.http = Server(self.handle, self.reject, self.options.max_body_bytes, self.options.body_timeout)
        listening = await self.http.start(host, port, reuse_port)
        REQUESTS.labels(self.model.name, "predict", "200")  # expose the series from the start
        self._tasks = [asyncio.create_task(self._drift_loop())]
        if self.batcher is not None:
            self._tasks.append(asyncio.create_task(self.batcher.run()))
        MODEL_BACKEND.labels(self.model.name, self.model.version, self.model.backend).set(1)
        self.ready = True
        return listening

    async def stop(self) -> None:
        self.ready = False
        if self.http is not None:
            self.http.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.pool.shutdown(wait=False)

    @contextlib.asynccontextmanager
    async def running(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve in this event loop (tests, embedding); yields the base URL."""
        listening = await self.start(host, port)
        try:
            yield "http://{}:{}".format(*listening.sockets[0].getsockname())
        finally:
            listening.close()
            await self.stop()

    async def _drift_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.options.drift_interval)
            await loop.run_in_executor(None, self.monitor.compute)
            await loop.run_in_executor(None, self.quality.compute)

    # routing, errors and counting --------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            handler, request.params = self.routes.resolve(request.method, request.path)
            response = await handler(request)
        except Exception as err:  # HttpError too: every failure answers JSON
            response = self._error_response(request, err)
        self._count(request.path, response.status, time.perf_counter() - started)
        return response

    def reject(self, request: Request, err: HttpError) -> Response:
        """The counted answer to a request not read to its end (too large, too slow, not HTTP)."""
        response = self._error_response(request, err)
        self._count(request.path, response.status, None)
        return response

    def _count(self, path: str, status: int, seconds: float | None) -> None:
        """A response to an inference or feedback endpoint in the metrics (children cached)."""
        endpoint = path.rpartition("/")[2]
        if endpoint not in ENDPOINTS or (endpoint == "predict" and path != "/predict"):
            return
        key = (endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                REQUESTS.labels(self.model.name, endpoint, str(status)),
                LATENCY.labels(self.model.name, endpoint),
            )
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def _error_response(self, request: Request, err: Exception) -> Response:
        """One place maps errors to statuses: 400, 404, 405, 408, 413, other 4xx, else 500."""
        if isinstance(err, UserError):
            return _json_error(str(err), 400)
        if isinstance(err, NotFound):
            return _json_error(str(err), 404)
        if isinstance(err, HttpError):
            return self._http_error(request, err)
        given = request.headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        log.error("request %s: %s %s failed", request_id, request.method, request.path, exc_info=err)
        return json_response(
            {
                "error": f"internal error (request id {request_id}); the server logged its cause: "
                "report the id to the model's operators",
                "request_id": request_id,
            },
            status=500,
            headers={"X-Request-Id": request_id},
        )

    def _http_error(self, request: Request, err: HttpError) -> Response:
        if err.status == 413:
            limit = self.options.max_body_bytes
            return _json_error(f"the body is over {limit} bytes; send fewer rows per request", 413)
        if err.status == 408:
            response = _json_error(
                f"the request body did not arrive within {self.options.body_timeout:g} s; "
                "send the whole body at once, or fewer rows per request",
                408,
            )
            response.close = True  # the rest of the body may never come: do not wait for it
            return response
        if err.status == 405:
            allow = ", ".join(err.allow)
            message = f"{request.method} is not allowed on {request.path}; use {allow}"
            return _json_error(message, 405, {"Allow": allow})
        if err.status == 404:
            return _json_error(f"no route {request.path}; the routes are {ROUTES}", 404)
        if err.status == 431:
            return _json_error(f"the request's headers are over {MAX_HEAD_KIB} KiB; send fewer", 431)
        if err.status == 400:
            return _json_error("the request is not valid HTTP/1.1; send a well-formed request", 400)
        return _json_error(str(err), err.status)

    # health and metadata -----------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def readyz(self, request: Request) -> Response:
        return json_response({"ready": self.ready}, status=200 if self.ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        from conveyor import __version__

        return json_response({"name": "conveyor", "version": __version__, "extensions": []})

    def _check_name(self, request: Request) -> None:
        """404 unless the path names this model (and, if it names one, its version)."""
        name, version = request.params["model"], request.params.get("version")
        if name != self.model.name:
            raise NotFound(f"no model {name!r}; this server serves {self.model.name!r}")
        if version is not None and version != self.model.version:
            raise NotFound(
                f"model {name!r} has no version {version!r}; this server serves version "
                f"{self.model.version!r}"
            )

    async def model_ready(self, request: Request) -> Response:
        self._check_name(request)
        return json_response(
            {"name": self.model.name, "ready": self.ready}, status=200 if self.ready else 503
        )

    async def model_metadata(self, request: Request) -> Response:
        self._check_name(request)
        m = self.model
        return json_response(
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

    async def metrics(self, request: Request) -> Response:
        return Response(200, generate_latest(exposition_registry()), content_type=CONTENT_TYPE_LATEST)

    # inference ---------------------------------------------------------------------------------
    def _json(self, request: Request) -> Any:
        if BINARY_HEADER in request.headers:
            raise BadInput(
                f"binary tensor data (the {BINARY_HEADER} header) is not supported; send JSON: "
                "with tritonclient, set_data_from_numpy(..., binary_data=False) and "
                "InferRequestedOutput(..., binary_data=False)"
            )
        return decode_json(request.body)

    async def predict(self, request: Request) -> Response:
        rows = parse_predict(self._json(request))
        request_id = new_request_id()
        preds = await self._run(rows, request_id)
        return json_response(
            {
                "predictions": preds,
                "ids": prediction_ids(request_id, len(preds)),
                "id": request_id,
                "model": self.model.name,
                "version": self.model.version,
            }
        )

    async def infer(self, request: Request) -> Response:
        self._check_name(request)
        # The common request, read by orjson alone: one that the fast path accepts is valid UTF-8,
        # three levels deep and has every feature once, each a float or null (what `validate`
        # checks), so none of these checks is repeated.
        plain = plain_v2_rows(quick_json(request.body), self.model.features)
        if plain is None:  # anything else: validated, and explained if wrong
            parsed = parse_infer(self._json(request))
            rows, given = v2_rows(parsed, self.model.features, self.model.numeric), parsed.id
        else:
            rows, given = plain
        request_id = given or new_request_id()  # the client's, else one of ours: always one
        preds = await self._run(rows, request_id, checked=plain is not None)
        out: dict[str, Any] = {
            "id": request_id,
            "model_name": self.model.name,
            "model_version": self.model.version,
            "outputs": [
                {"name": OUTPUT, "shape": [len(preds)], "datatype": self.output_datatype, "data": preds}
            ],
        }
        return json_response(out)

    async def feedback(self, request: Request) -> Response:
        """Labels for earlier predictions, by id: the accepted count, the unknown ids (never
        predicted here, expired from the feedback window, or labelled already)."""
        if "model" in request.params:
            self._check_name(request)
        body = parse_feedback(self._json(request), self.model.classes, self.options.max_rows)
        result = self.quality.label(body.ids, body.values)
        return json_response(
            {
                "accepted": result.accepted,
                "unknown": result.unknown,
                "model": self.model.name,
                "version": self.model.version,
            }
        )

    async def _run(self, rows: list[dict[str, Any]], request_id: str, checked: bool = False) -> list[Any]:
        """Predictions for rows (`checked`: known to pass `validate`); they join the drift
        window (per batch, by the batcher) and the feedback window."""
        if not rows:
            raise BadInput("no rows: send at least one instance")
        if len(rows) > self.options.max_rows:
            raise BadInput(
                f"{len(rows)} rows is over the limit of {self.options.max_rows}; split the request"
            )
        if not checked:
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
    """Serve until SIGINT or SIGTERM (on uvloop when it is installed)."""
    run_until_signalled(server, host, port, reuse_port)


def _json_error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status=status, headers=headers)
