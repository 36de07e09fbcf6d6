"""Requests coalesced into one predict call, each answered by its callback: batches formed
from what arrived together, one failing request failing alone, monitoring seeing each batch
once before any answer, and a slow backend's batches taking turns in the worker thread."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from conveyor.serving.batcher import Batcher, Waiter


class Model:
    """Predicts a row's `x` doubled; fails on a row whose `x` is negative."""

    name = "m"

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[float]] = []
        self.threads: set[str] = set()
        self.delay = delay

    def predict(self, rows: list[dict[str, Any]]) -> list[Any]:
        self.calls.append([r["x"] for r in rows])
        self.threads.add(threading.current_thread().name)
        if self.delay:
            threading.Event().wait(self.delay)
        if any(r["x"] < 0 for r in rows):
            raise ValueError("negative x")
        return [2 * r["x"] for r in rows]


class Outcomes:
    def __init__(self) -> None:
        self.got: dict[str, tuple[list[Any] | None, Exception | None]] = {}
        self.seen_before_answers: list[bool] = []

    def done(self, request_id: str) -> Any:
        def record(preds: list[Any] | None, err: Exception | None) -> None:
            self.got[request_id] = (preds, err)

        return record


async def settle(batcher: Batcher) -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not batcher.gathered and not batcher.dispatching and batcher.flush is None:
            return


async def test_requests_of_one_turn_are_one_batch_observed_once_before_their_answers() -> None:
    model, out = Model(), Outcomes()
    observed: list[tuple[list[Any], list[str]]] = []

    def observe(rows: list[dict[str, Any]], preds: list[Any], batch: list[Waiter]) -> None:
        observed.append((preds, [w.request_id for w in batch]))
        out.seen_before_answers.append(not out.got)

    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(model, pool, max_size=32, max_latency=0.0, inline=True, observe=observe)
        batcher.submit([{"x": 1.0}], "a", out.done("a"))
        batcher.submit([{"x": 2.0}, {"x": 3.0}], "b", out.done("b"))
        batcher.submit([{"x": 4.0}], "c", out.done("c"))
        assert out.got == {}, "answered before the turn ended: nothing could be batched"
        await settle(batcher)
    assert model.calls == [[1.0, 2.0, 3.0, 4.0]]
    assert out.got == {"a": ([2.0], None), "b": ([4.0, 6.0], None), "c": ([8.0], None)}
    assert observed == [([2.0, 4.0, 6.0, 8.0], ["a", "b", "c"])] and out.seen_before_answers == [True]
    assert model.threads == {threading.current_thread().name}  # inline: in the event loop


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "worker-thread"])
async def test_a_failing_request_fails_alone(inline: bool) -> None:
    model, out = Model(), Outcomes()
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(model, pool, max_size=32, max_latency=0.0, inline=inline)
        for rid, x in (("a", 1.0), ("bad", -1.0), ("c", 3.0)):
            batcher.submit([{"x": x}], rid, out.done(rid))
        await settle(batcher)
    assert model.calls[0] == [1.0, -1.0, 3.0]  # one batch first, then each request alone
    assert out.got["a"] == ([2.0], None) and out.got["c"] == ([6.0], None)
    preds, err = out.got["bad"]
    assert preds is None and isinstance(err, ValueError)


async def test_a_failing_observer_costs_no_answer() -> None:
    def observe(rows: list[dict[str, Any]], preds: list[Any], batch: list[Waiter]) -> None:
        raise RuntimeError("monitoring broke")

    model, out = Model(), Outcomes()
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(model, pool, max_size=32, max_latency=0.0, inline=True, observe=observe)
        batcher.submit([{"x": 1.0}], "a", out.done("a"))
        await settle(batcher)
    assert out.got == {"a": ([2.0], None)}


async def test_without_batching_each_request_is_predicted_alone() -> None:
    model, out = Model(), Outcomes()
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(model, pool, max_size=1, max_latency=0.0, inline=True)
        for rid, x in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
            batcher.submit([{"x": x}], rid, out.done(rid))
        await settle(batcher)
    assert model.calls == [[1.0], [2.0], [3.0]] and len(out.got) == 3


async def test_a_slow_backend_predicts_in_the_thread_one_batch_at_a_time() -> None:
    """What arrives while a batch is in the worker thread becomes the next batch."""
    model, out = Model(delay=0.05), Outcomes()
    with ThreadPoolExecutor(1, thread_name_prefix="predict") as pool:
        batcher = Batcher(model, pool, max_size=32, max_latency=0.0, inline=False)
        batcher.submit([{"x": 1.0}], "a", out.done("a"))
        await asyncio.sleep(0.01)  # the first batch is in the thread now
        for rid, x in (("b", 2.0), ("c", 3.0)):
            batcher.submit([{"x": x}], rid, out.done(rid))
        await settle(batcher)
        await asyncio.sleep(0.1)
    assert model.calls == [[1.0], [2.0, 3.0]]
    assert {t.split("_")[0] for t in model.threads} == {"predict"}
    assert out.got == {"a": ([2.0], None), "b": ([4.0], None), "c": ([6.0], None)}
