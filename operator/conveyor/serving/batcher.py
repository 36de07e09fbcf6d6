"""Concurrent requests coalesced into one `predict` call, run in the worker thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conveyor.serving.model import ServedModel
from conveyor.serving.monitor import BATCH_SIZE

Waiter = tuple[list[dict[str, Any]], "asyncio.Future[list[Any]]"]


class Batcher:
    """Coalesces concurrent requests into one `predict` call within a small time budget. If a
    batch fails, its requests are retried one by one, so only the failing one fails."""

    def __init__(
        self, model: ServedModel, pool: ThreadPoolExecutor, max_size: int, max_latency: float
    ) -> None:
        self.model, self.pool = model, pool
        self.max_size, self.max_latency = max_size, max_latency
        self.queue: asyncio.Queue[Waiter] = asyncio.Queue()
        self.sizes = BATCH_SIZE.labels(model.name)

    async def predict(self, rows: list[dict[str, Any]]) -> list[Any]:
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self.queue.put((rows, fut))
        return await fut

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
        start = 0
        for part, fut in batch:
            if not fut.done():
                fut.set_result(preds[start : start + len(part)])
            start += len(part)
