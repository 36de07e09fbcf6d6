"""Concurrent requests coalesced into one `predict` call.

With a backend that is fast and runs no Python (ONNX), a small batch is predicted in the event
loop itself, right after the requests that arrived together were read: handing it to a worker
thread costs more than the prediction (a queue, two wake-ups and a GIL hand-over, which on a
busy machine waits up to the interpreter's switch interval). Large batches, and every batch of
a slow backend (scikit-learn), run in the worker thread so the loop keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conveyor.serving.model import ServedModel
from conveyor.serving.monitor import BATCH_SIZE

Waiter = tuple[list[dict[str, Any]], "asyncio.Future[list[Any]]"]
INLINE_ROWS = 64  # the largest batch predicted in the event loop (ONNX: well under 1 ms)


class Batcher:
    """Coalesces concurrent requests into one `predict` call within a small time budget. If a
    batch fails, its requests are retried one by one, so only the failing one fails. Each batch
    that succeeds goes to `observe` (the drift window) once, with its predictions."""

    def __init__(
        self,
        model: ServedModel,
        pool: ThreadPoolExecutor,
        max_size: int,
        max_latency: float,
        inline: bool = False,
        observe: Callable[[list[dict[str, Any]], list[Any]], None] = lambda rows, preds: None,
    ) -> None:
        self.model, self.pool, self.inline, self.observe = model, pool, inline, observe
        self.max_size, self.max_latency = max_size, max_latency
        self.queue: asyncio.Queue[Waiter] = asyncio.Queue()
        self.sizes = BATCH_SIZE.labels(model.name)
        self.gathered: list[Waiter] = []  # inline: the requests the next flush predicts
        self.flush: asyncio.Handle | None = None
        self.dispatching: set[asyncio.Future[None]] = set()  # large inline batches, in the thread

    async def predict(self, rows: list[dict[str, Any]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if not self.inline:
            await self.queue.put((rows, fut))
            return await fut
        self.gathered.append((rows, fut))
        if self.flush is None:  # after the requests read in this turn of the loop
            self.flush = (
                loop.call_later(self.max_latency, self._flush)
                if self.max_latency > 0
                else loop.call_soon(self._flush)
            )
        return await fut

    def _flush(self) -> None:
        self.flush = None
        batch: list[Waiter] = []
        rows = 0
        while self.gathered and (not batch or rows + len(self.gathered[0][0]) <= self.max_size):
            batch.append(self.gathered.pop(0))
            rows += len(batch[-1][0])
        if self.gathered:
            self.flush = asyncio.get_running_loop().call_soon(self._flush)
        self.sizes.observe(rows)
        if rows <= INLINE_ROWS:
            self._predict_inline(batch)
        else:
            task = asyncio.ensure_future(self._dispatch(batch))
            self.dispatching.add(task)
            task.add_done_callback(self.dispatching.discard)

    def _predict_inline(self, batch: list[Waiter]) -> None:
        try:
            rows = [row for part, _ in batch for row in part]
            preds = self.model.predict(rows)
        except Exception as err:
            if len(batch) > 1:  # find the request(s) at fault; the others still succeed
                for waiter in batch:
                    self._predict_inline([waiter])
            elif not batch[0][1].done():
                batch[0][1].set_exception(err)
            return
        self._hand_out(batch, preds, rows)

    async def run(self) -> None:
        while True:
            batch = await self._collect()
            self.sizes.observe(sum(len(part) for part, _ in batch))
            await self._dispatch(batch)

    async def _collect(self) -> list[Waiter]:
        loop = asyncio.get_running_loop()
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
        return batch

    async def _dispatch(self, batch: list[Waiter]) -> None:
        loop = asyncio.get_running_loop()
        all_rows = [row for part, _ in batch for row in part]
        try:
            preds = await loop.run_in_executor(self.pool, self.model.predict, all_rows)
        except Exception as err:
            if len(batch) > 1:  # find the request(s) at fault; the others still succeed
                for waiter in batch:
                    await self._dispatch([waiter])
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(err)
            return
        self._hand_out(batch, preds, all_rows)

    def _hand_out(self, batch: list[Waiter], preds: list[Any], rows: list[dict[str, Any]]) -> None:
        self.observe(rows, preds)
        start = 0
        for part, fut in batch:
            if not fut.done():
                fut.set_result(preds[start : start + len(part)])
            start += len(part)
