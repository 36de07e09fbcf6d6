"""The controller's work queue with the reconcile replaced by a script: one reconcile of a key
at a time, kicks coalesce, each error kind has its delay, and nothing is kept for a key with
nothing pending."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from conveyor.errors import Conflict, Gone, Transient
from conveyor.kube.client import KubeClient
from conveyor.kube.controller import CONFLICT_DELAY, RUN, Controller, Key, _Entry
from conveyor.kube.credentials import Connection
from conveyor.kube.settings import Settings

KEY: Key = (RUN, "ns", "r")
Script = Callable[[Key], Awaitable[float | None]]


def controller(script: Script, **settings: float) -> Controller:
    c = Controller(Settings(**settings), KubeClient(Connection("http://127.0.0.1:1")))  # never called
    c._reconcile = script  # type: ignore[method-assign,assignment]
    return c


def test_a_key_is_reconciled_once_at_a_time_and_a_kick_meanwhile_runs_it_once_more() -> None:
    calls: list[str] = []
    running = 0
    peak = 0

    async def reconcile(key: Key) -> float | None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        calls.append("start")
        await asyncio.sleep(0.05)
        running -= 1
        return None

    async def go() -> Controller:
        c = controller(reconcile)
        c.requeue(KEY, 0)
        await asyncio.sleep(0.01)  # running now
        for _ in range(5):
            c.requeue(KEY, 0)  # five kicks while it runs: one more reconcile, not five
        await asyncio.sleep(0.2)
        return c

    c = asyncio.run(go())
    assert calls == ["start", "start"] and peak == 1
    assert c.pending() == 0  # done, nothing due: nothing kept


def test_the_sooner_of_two_requeues_wins() -> None:
    seen: list[float] = []

    async def reconcile(key: Key) -> float | None:
        seen.append(asyncio.get_running_loop().time())
        return None

    async def go() -> tuple[float, Controller]:
        c = controller(reconcile)
        start = asyncio.get_running_loop().time()
        c.requeue(KEY, 5.0)
        c.requeue(KEY, 0.02)
        c.requeue(KEY, 3.0)  # later than what is due: ignored
        await asyncio.sleep(0.1)
        return start, c

    start, c = asyncio.run(go())
    assert len(seen) == 1 and seen[0] - start < 1.0 and c.pending() == 0


ERRORS = [
    ("gone: dropped", Gone("namespace terminating"), None),
    ("conflict: at once", Conflict("changed"), CONFLICT_DELAY),
    ("transient: its delay", Transient("busy", delay=7.0), 7.0),
    ("a bug: back-off from resync", RuntimeError("boom"), 2.0),
]


@pytest.mark.parametrize(("error", "delay"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_each_error_kind_has_its_delay(error: Exception, delay: float | None) -> None:
    async def reconcile(key: Key) -> float | None:
        raise error

    async def go() -> float | None:
        c = controller(reconcile, resync_seconds=2.0)
        return await c._reconcile_safely(KEY, _Entry())

    assert asyncio.run(go()) == delay


def test_back_off_doubles_per_failure_and_a_success_resets_it() -> None:
    outcomes: list[Exception | None] = [RuntimeError(), RuntimeError(), RuntimeError(), None, RuntimeError()]

    async def reconcile(key: Key) -> float | None:
        error = outcomes.pop(0)
        if error is not None:
            raise error
        return 10.0

    async def go() -> list[float | None]:
        c = controller(reconcile, resync_seconds=1.0)
        entry = _Entry()
        return [await c._reconcile_safely(KEY, entry) for _ in range(5)]

    assert asyncio.run(go()) == [1.0, 2.0, 4.0, 10.0, 1.0]
