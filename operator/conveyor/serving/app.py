"""The HTTP layer: decode, delegate, encode. Open Inference Protocol (V2) REST, `/predict`,
health, `/metrics`. Requests are validated one by one (`protocol`) before they are batched
(`batcher`: small ONNX batches in the event loop, the rest in one worker thread) and answered
by callback when their batch is predicted; drift is computed in the background. Every
prediction gets an id (a V2 response's `id`, the `ids` of a `/predict` response); labels sent
for them (`.../feedback`) feed the live quality gauges. Every failure is a JSON
`{"error": ...}`; every response to an inference or feedback endpoint is counted by code, 5xx
included."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conveyor.errors import NotFound
from conveyor.serving.batcher import Batcher, Waiter
from conveyor.serving.failures import error_response
from conveyor.serving.fastpath import plain_v2_rows
from conveyor.serving.http import (
    HttpError,
    Request,
    Respond,
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

BINARY_HEADER = "inference-header-content-length"  # as the headers are kept: lower case
ENDPOINTS = frozenset({"predict", "infer", "feedback"})  # the counted ones


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
        self.batcher = Batcher(  # without batching, one request per predict call
            model,
            self.pool,
            options.max_batch_size if options.batching else 1,
            options.max_latency_ms / 1000 if options.batching else 0.0,
            inline=model.backend == "onnx",
            observe=self._observe,
        )
        self.output_datatype = output_datatype(model.classes)
        self.ready = False
        self.routes = self.router()
        self._tasks: list[asyncio.Task[None]] = []
        self._answering: set[asyncio.Task[None]] = set()  # the requests of async handlers
        self.http: Server | None = None
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._predictions: dict[str, Any] = {}  # class -> its PREDICTIONS child

    def router(self) -> Router:
        """Routes to handlers `(request, finish)`: inference answers by callback when its batch
        is predicted; the others are coroutines, awaited in a task (`_later`)."""
        routes = Router()
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes.add("GET", prefix, self._later(self.model_metadata))
            routes.add("GET", prefix + "/ready", self._later(self.model_ready))
            routes.add("POST", prefix + "/infer", self.infer)
            routes.add("POST", prefix + "/feedback", self._later(self.feedback))
        for path in ("/v2/health/live", "/healthz"):
            routes.add("GET", path, self._later(self.live))
        for path in ("/v2/health/ready", "/readyz"):
            routes.add("GET", path, self._later(self.readyz))
        for path in ("/v2", "/v2/"):  # "/v2/": the path in the official OpenAPI file
            routes.add("GET", path, self._later(self.server_metadata))
        routes.add("POST", "/predict", self.predict)
        routes.add("POST", "/feedback", self._later(self.feedback))
        routes.add("GET", "/metrics", self._later(self.metrics))
        return routes

    def _later(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request, Respond], None]:
        """A coroutine handler as a `(request, finish)` one: awaited in a task of its own."""

        def start(request: Request, finish: Respond) -> None:
            task = asyncio.ensure_future(self._await(handler, request, finish))
            self._answering.add(task)  # held: the loop keeps only weak references to tasks
            task.add_done_callback(self._answering.discard)

        return start

    async def _await(
        self, handler: Callable[[Request], Awaitable[Response]], request: Request, finish: Respond
    ) -> None:
        try:
            response = await handler(request)
        except Exception as err:  # HttpError too: every failure answers JSON
            response = self._error_response(request, err)
        finish(response)

    async def start(self, host: str, port: int, reuse_port: bool = False) -> asyncio.Server:
        """Listen on host:port, start the drift loop (and the batcher), and say ready."""
        self.http = Server(self.handle, self.reject, self.options.max_body_bytes, self.options.body_timeout)
        listening = await self.http.start(host, port, reuse_port)
        REQUESTS.labels(self.model.name, "predict", "200")  # expose the series from the start
        self._tasks = [asyncio.create_task(self._drift_loop())]
        MODEL_BACKEND.labels(self.model.name, self.model.version, self.model.backend).set(1)
        self.ready = True
        return listening

    async def stop(self) -> None:
        self.ready = False
        if self.http is not None:
            self.http.close()
        for task in [*self._tasks, *self._answering, *self.batcher.dispatching]:
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
    def handle(self, request: Request, respond: Respond) -> None:
        """Answer `request` through `respond`, once: now, or when its handler finishes."""
        started = time.perf_counter()

        def finish(response: Response) -> None:
            self._count(request.path, response.status, time.perf_counter() - started)
            respond(response)

        try:
            handler, request.params = self.routes.resolve(request.method, request.path)
            handler(request, finish)  # raises only before it hands the request on
        except Exception as err:  # HttpError too: every failure answers JSON
            finish(self._error_response(request, err))

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
        return error_response(request, err, self.options.max_body_bytes, self.options.body_timeout)

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

    def predict(self, request: Request, finish: Respond) -> None:
        rows = parse_predict(self._json(request))
        request_id = new_request_id()

        def reply(preds: list[Any]) -> Response:
            return json_response(
                {
                    "predictions": preds,
                    "ids": prediction_ids(request_id, len(preds)),
                    "id": request_id,
                    "model": self.model.name,
                    "version": self.model.version,
                }
            )

        self._submit(request, rows, request_id, reply, finish)

    def infer(self, request: Request, finish: Respond) -> None:
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

        def reply(preds: list[Any]) -> Response:
            output = {"name": OUTPUT, "shape": [len(preds)], "datatype": self.output_datatype, "data": preds}
            return json_response(
                {
                    "id": request_id,
                    "model_name": self.model.name,
                    "model_version": self.model.version,
                    "outputs": [output],
                }
            )

        self._submit(request, rows, request_id, reply, finish, checked=plain is not None)

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

    def _submit(
        self,
        request: Request,
        rows: list[dict[str, Any]],
        request_id: str,
        reply: Callable[[list[Any]], Response],
        finish: Respond,
        checked: bool = False,
    ) -> None:
        """Predict rows (`checked`: known to pass `validate`) in the next batch, then finish
        with `reply(predictions)`, or with the error that failed them."""
        if not rows:
            raise BadInput("no rows: send at least one instance")
        if len(rows) > self.options.max_rows:
            raise BadInput(
                f"{len(rows)} rows is over the limit of {self.options.max_rows}; split the request"
            )
        if not checked:
            self.model.validate(rows)

        def done(preds: list[Any] | None, err: Exception | None) -> None:
            try:
                if err is not None:
                    raise err
                response = reply(preds or [])
            except Exception as failure:
                response = self._error_response(request, failure)
            finish(response)

        self.batcher.submit(rows, request_id, done)

    def _observe(self, rows: list[dict[str, Any]], preds: list[Any], batch: list[Waiter]) -> None:
        """A predicted batch joins the drift window and the feedback window (each prediction
        by its id), and the prediction counts."""
        self.monitor.observe(rows, preds)
        ids: list[str] = []
        for waiter in batch:
            ids.extend(prediction_ids(waiter.request_id, len(waiter.rows)))
        self.quality.observe(ids, preds)
        if not self.model.classes:
            PREDICTIONS.labels(self.model.name, self.model.version, "").inc(len(preds))
            return
        for label, count in Counter(map(str, preds)).items():
            counter = self._predictions.get(label)
            if counter is None:
                counter = PREDICTIONS.labels(self.model.name, self.model.version, label)
                self._predictions[label] = counter
            counter.inc(count)


def serve(server: InferenceServer, host: str, port: int, reuse_port: bool = False) -> None:
    """Serve until SIGINT or SIGTERM (on uvloop when it is installed)."""
    run_until_signalled(server, host, port, reuse_port)
