"""Concurrent requests coalesced into one `predict` call.

A request is submitted with a callback (`Done`), which gets its predictions or the error that
made them fail: no future or task per request, and the answers go out in the same turn of the
event loop as the prediction. With a backend that is fast and runs no Python (ONNX), a small
batch is predicted in the event loop itself, right after the requests that arrived together
were read: handing it to a worker thread costs more than the prediction (a queue, two wake-ups
and a GIL hand-over, which on a busy machine waits up to the interpreter's switch interval).
Large batches, and every batch of a slow backend (scikit-learn), run in the worker thread so
the loop keeps serving. Without batching (`max_size` 1) every request is predicted alone."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from conveyor.serving.model import ServedModel
from conveyor.serving.monitor import BATCH_SIZE

INLINE_ROWS = 64  # the largest batch predicted in the event loop (ONNX: well under 1 ms)
Done = Callable[[list[Any] | None, Exception | None], None]  # (predictions, error): one is None
Observe = Callable[[list[dict[str, Any]], list[Any], list["Waiter"]], None]
log = logging.getLogger("conveyor.serving")


class Waiter(NamedTuple):
    rows: list[dict[str, Any]]
    request_id: str
    done: Done


class Batcher:
    """Coalesces concurrent requests into one `predict` call. If a batch fails, its requests
    are retried one by one, so only the failing one fails. Each batch that succeeds goes to
    `observe` (drift, quality, counts) once, with its predictions, before any callback."""

    def __init__(
        self,
        model: ServedModel,
        pool: ThreadPoolExecutor,
        max_size: int,
        max_latency: float,
        inline: bool = False,
        observe: Observe = lambda rows, preds, batch: None,
    ) -> None:
        self.model, self.pool, self.inline, self.observe = model, pool, inline, observe
        self.max_size, self.max_latency = max(1, max_size), max_latency
        self.sizes = BATCH_SIZE.labels(model.name)
        self.gathered: deque[Waiter] = deque()  # the requests the next flush predicts
        self.flush: asyncio.Handle | None = None
        self.dispatching: set[asyncio.Future[None]] = set()  # the batch in the thread (one at most)

    def submit(self, rows: list[dict[str, Any]], request_id: str, done: Done) -> None:
        """Predict `rows` in the next batch; `done` is called once, with the outcome."""
        self.gathered.append(Waiter(rows, request_id, done))
        self._schedule()

    def _schedule(self) -> None:
        if self.flush is not None or self.dispatching or not self.gathered:
            return  # a batch in the thread: what queues meanwhile is the next one
        loop = asyncio.get_running_loop()
        # after the requests read in this turn of the loop (or within max_latency)
        if self.max_latency > 0:
            self.flush = loop.call_later(self.max_latency, self._flush)
        else:
            self.flush = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush = None
        batch: list[Waiter] = []
        rows = 0
        while self.gathered and (not batch or rows + len(self.gathered[0].rows) <= self.max_size):
            batch.append(self.gathered.popleft())
            rows += len(batch[-1].rows)
        self.sizes.observe(rows)
        if self.inline and rows <= INLINE_ROWS:
            self._predict_inline(batch)
            self._schedule()
            return
        task = asyncio.ensure_future(self._dispatch(batch))
        self.dispatching.add(task)
        task.add_done_callback(self._dispatched)

    def _dispatched(self, task: asyncio.Future[None]) -> None:
        self.dispatching.discard(task)
        self._schedule()

    def _predict_inline(self, batch: list[Waiter]) -> None:
        try:
            rows = [row for waiter in batch for row in waiter.rows]
            preds = self.model.predict(rows)
        except Exception as err:
            if len(batch) > 1:  # find the request(s) at fault; the others still succeed
                for waiter in batch:
                    self._predict_inline([waiter])
            else:
                _call(batch[0].done, None, err)
            return
        self._hand_out(batch, preds, rows)

    async def _dispatch(self, batch: list[Waiter]) -> None:
        loop = asyncio.get_running_loop()
        all_rows = [row for waiter in batch for row in waiter.rows]
        try:
            preds = await loop.run_in_executor(self.pool, self.model.predict, all_rows)
        except Exception as err:
            if len(batch) > 1:  # find the request(s) at fault; the others still succeed
                for waiter in batch:
                    await self._dispatch([waiter])
            else:
                _call(batch[0].done, None, err)
            return
        self._hand_out(batch, preds, all_rows)

    def _hand_out(self, batch: list[Waiter], preds: list[Any], rows: list[dict[str, Any]]) -> None:
        try:
            self.observe(rows, preds, batch)
        except Exception:  # monitoring must not cost the predictions
            log.exception("observing a batch of %d rows failed", len(rows))
        start = 0
        for waiter in batch:
            end = start + len(waiter.rows)
            _call(waiter.done, preds[start:end], None)
            start = end


def _call(done: Done, preds: list[Any] | None, err: Exception | None) -> None:
    """One callback; its failure is logged, and the batch's other callbacks still run."""
    try:
        done(preds, err)
    except Exception:
        log.exception("answering a request failed")
