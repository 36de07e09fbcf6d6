"""The HTTP layer: decode, delegate, encode. Open Inference Protocol (V2) REST, `/predict`,
health, `/metrics`. Predictions run in one worker thread (optionally batched) so the event
loop keeps accepting connections; drift is computed in the background."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conveyor.serving.model import BadInput, ServedModel
from conveyor.serving.monitor import (
    BATCH_SIZE,
    LATENCY,
    PREDICTIONS,
    REQUESTS,
    DriftMonitor,
    exposition_registry,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ServeOptions:
    max_rows: int = 1000
    max_body_bytes: int = 1 << 20
    drift_interval: float = 2.0
    batching: bool = True
    max_batch_size: int = 32
    max_latency_ms: float = 0.0  # 0: take what queued while the model was busy, never wait


class Batcher:
    """Coalesces concurrent requests into one `predict` call within a small time budget."""

    def __init__(
        self, model: ServedModel, pool: ThreadPoolExecutor, max_size: int, max_latency: float
    ) -> None:
        self.model, self.pool = model, pool
        self.max_size, self.max_latency = max_size, max_latency
        self.queue: asyncio.Queue[tuple[list[dict[str, Any]], asyncio.Future[list[Any]]]] = asyncio.Queue()

    async def predict(self, rows: list[dict[str, Any]]) -> list[Any]:
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self.queue.put((rows, fut))
        return await fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            rows = len(batch[0][0])
            deadline = loop.time() + self.max_latency
            while rows < self.max_size:
                if not self.queue.empty():  # whatever queued while the last batch ran
                    item = self.queue.get_nowait()
                else:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), timeout)
                    except TimeoutError:
                        break
                batch.append(item)
                rows += len(item[0])
            all_rows = [row for part, _ in batch for row in part]
            BATCH_SIZE.labels(self.model.name).observe(rows)
            try:
                preds = await loop.run_in_executor(self.pool, self.model.predict, all_rows)
            except Exception as err:  # a model error fails every request of the batch
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            start = 0
            for part, fut in batch:
                if not fut.done():
                    fut.set_result(preds[start : start + len(part)])
                start += len(part)


class InferenceServer:
    def __init__(self, model: ServedModel, monitor: DriftMonitor, options: ServeOptions) -> None:
        self.model, self.monitor, self.options = model, monitor, options
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self.batcher = (
            Batcher(model, self.pool, options.max_batch_size, options.max_latency_ms / 1000)
            if options.batching
            else None
        )
        self.ready = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.max_body_bytes, middlewares=[self._errors])
        name = self.model.name
        app.add_routes(
            [
                web.get("/v2/health/live", self.live),
                web.get("/v2/health/ready", self.readyz),
                web.get("/healthz", self.live),
                web.get("/readyz", self.readyz),
                web.get("/v2", self.server_metadata),
                web.get("/v2/models/{model}", self.model_metadata),
                web.get("/v2/models/{model}/ready", self.readyz),
                web.post("/v2/models/{model}/infer", self.infer),
                web.post("/predict", self.predict),
                web.get("/metrics", self.metrics),
            ]
        )
        app.cleanup_ctx.append(self._background)
        REQUESTS.labels(name, "predict", "200")  # expose the series from the start
        return app

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self._drift_loop())]
        if self.batcher is not None:
            tasks.append(asyncio.create_task(self.batcher.run()))
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

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = "infer" if request.path.endswith("/infer") else request.path.strip("/").split("/")[0]
        started = time.perf_counter()
        try:
            response = await handler(request)
        except BadInput as err:
            response = web.json_response({"error": str(err)}, status=400)
        except web.HTTPRequestEntityTooLarge:
            response = web.json_response(
                {"error": f"the body is over {self.options.max_body_bytes} bytes; send fewer rows"},
                status=400,
            )
        except web.HTTPException as err:
            response = web.json_response({"error": err.reason}, status=err.status)
        if endpoint in ("infer", "predict"):
            REQUESTS.labels(self.model.name, endpoint, str(response.status)).inc()
            LATENCY.labels(self.model.name, endpoint).observe(time.perf_counter() - started)
        return response

    # health and metadata ---------------------------------------------------------------------
    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def readyz(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": self.ready}, status=200 if self.ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        from conveyor import __version__

        return web.json_response({"name": "conveyor", "version": __version__, "extensions": []})

    def _check_name(self, request: web.Request) -> None:
        if request.match_info["model"] != self.model.name:
            raise web.HTTPNotFound(
                reason=f"no model {request.match_info['model']!r}; this server serves {self.model.name!r}"
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
                "outputs": [{"name": "predict", "datatype": _datatype(m.classes), "shape": [-1]}],
                "parameters": {"task": m.task, "sha256": m.sha256},
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(exposition_registry()), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # inference -------------------------------------------------------------------------------
    async def _json(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except json.JSONDecodeError as err:
            raise BadInput(f"the body is not JSON: {err}") from None

    async def predict(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
            raise BadInput('the body must be {"instances": [{feature: value, ...}, ...]}')
        rows = body["instances"]
        preds = await self._run(rows)
        return web.json_response(
            {"predictions": preds, "model": self.model.name, "version": self.model.version}
        )

    async def infer(self, request: web.Request) -> web.Response:
        self._check_name(request)
        body = await self._json(request)
        rows = v2_rows(body, self.model.features)
        preds = await self._run(rows)
        out = {
            "model_name": self.model.name,
            "model_version": self.model.version,
            "outputs": [
                {"name": "predict", "shape": [len(preds)], "datatype": _datatype(preds), "data": preds}
            ],
        }
        if isinstance(body, dict) and "id" in body:
            out["id"] = body["id"]
        return web.json_response(out)

    async def _run(self, rows: list[Any]) -> list[Any]:
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
        if self.model.classes:
            for p in preds:
                PREDICTIONS.labels(self.model.name, self.model.version, str(p)).inc()
        else:
            PREDICTIONS.labels(self.model.name, self.model.version, "").inc(len(preds))
        return preds


def v2_rows(body: Any, features: list[str]) -> list[dict[str, Any]]:
    """Rows from a V2 inference request: one input per feature (named columns), or one
    [n, features] tensor in the model's feature order."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise BadInput('the body must be {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    inputs = body["inputs"]
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict) or "name" not in inp or "data" not in inp:
            raise BadInput(f"inputs[{i}] needs `name`, `shape`, `datatype` and `data`")
    names = [inp["name"] for inp in inputs]
    if len(inputs) == 1 and names[0] not in features:
        inp = inputs[0]
        shape = inp.get("shape") or []
        flat = _flatten(inp["data"])
        if len(shape) != 2 or shape[1] != len(features) or len(flat) != shape[0] * shape[1]:
            raise BadInput(
                f"inputs[0] ({inp['name']!r}): a row tensor must have shape [n, {len(features)}] "
                f"and n*{len(features)} values; or send one input per feature"
            )
        return [
            dict(zip(features, flat[r * len(features) : (r + 1) * len(features)], strict=True))
            for r in range(shape[0])
        ]
    unknown = [n for n in names if n not in features]
    if unknown:
        raise BadInput(f"inputs: unknown feature(s) {', '.join(map(repr, unknown[:5]))}")
    missing = [f for f in features if f not in names]
    if missing:
        raise BadInput(f"inputs: missing feature(s) {', '.join(map(repr, missing[:5]))}")
    columns = {inp["name"]: _flatten(inp["data"]) for inp in inputs}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise BadInput("inputs: every feature must have the same number of values")
    n = lengths.pop()
    return [{f: columns[f][r] for f in features} for r in range(n)]


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [v for row in data for v in row]
    if not isinstance(data, list):
        raise BadInput("`data` must be a list")
    return data


def _datatype(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) for v in values):
        return "INT64"
    if values and all(isinstance(v, int | float) for v in values):
        return "FP64"
    return "BYTES"
