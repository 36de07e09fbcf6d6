"""The Pipeline reconciler against the real API server, as the chart's ServiceAccount, with an
injected clock: schedules, concurrency policies and history limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.kube.client import KubeClient
from conveyor.kube.credentials import Connection
from conveyor.kube.reconcilers.pipeline import PipelineReconciler
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver
from tests.cluster.api import Api
from tests.integration.kube.conftest import create, get, items, merge_patch
from tests.integration.kube.runs_helpers import custom, pipeline, run_of


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 9, 58, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def reconciler(s3: dict[str, str], clock: Clock, kicked: list[str]) -> PipelineReconciler:
    async def kick(namespace: str, name: str) -> None:
        kicked.append(name)

    kube = KubeClient(Connection.from_environment())  # the operator's identity
    return PipelineReconciler(kube, StoreResolver(Settings(s3_endpoint=s3["endpoint"])), kick, clock)


async def runs(kube: Api, ns: str) -> list[str]:
    return sorted(r["metadata"]["name"] for r in await items(kube, "pipelineruns", ns))


async def set_phase(kube: Api, ns: str, name: str, phase: str, done: str | None = None) -> None:
    body: dict[str, Any] = {"status": {"phase": phase}}
    if done:
        body["status"]["completionTime"] = done
    await merge_patch(kube, "pipelineruns", ns, f"{name}/status", body)


async def test_schedule_creates_one_run_per_due_time_and_forbid_skips(
    kube: Api, ns: str, s3: dict[str, str]
) -> None:
    clock, kicked = Clock(), []
    rec = await reconciler(s3, clock, kicked)
    await create(
        kube,
        pipeline("nightly", [custom("a", "pass")], s3, schedule="*/5 * * * *", concurrencyPolicy="Forbid"),
        ns,
    )
    await rec.reconcile(ns, "nightly")  # first sight: starts the schedule, creates nothing
    assert await runs(kube, ns) == []
    clock.now += timedelta(minutes=3)  # 10:01 -> the 10:00 slot is due
    await rec.reconcile(ns, "nightly")
    await rec.reconcile(ns, "nightly")  # idempotent: no second run for the same slot
    assert await runs(kube, ns) == ["nightly-202601011000"]
    run = await get(kube, "pipelineruns", ns, "nightly-202601011000")
    assert run is not None and run["metadata"]["labels"]["conveyor.dev/trigger"] == "schedule"
    assert run["metadata"]["ownerReferences"][0]["kind"] == "Pipeline"
    clock.now += timedelta(minutes=5)  # 10:06: due again, but the first run is still active
    await rec.reconcile(ns, "nightly")
    assert await runs(kube, ns) == ["nightly-202601011000"]
    await set_phase(kube, ns, "nightly-202601011000", "Succeeded", "2026-01-01T10:07:00Z")
    clock.now += timedelta(minutes=5)  # 10:11
    await rec.reconcile(ns, "nightly")
    assert await runs(kube, ns) == ["nightly-202601011000", "nightly-202601011010"]
    await rec.kube.close()


async def test_replace_policy_cancels_the_active_run(kube: Api, ns: str, s3: dict[str, str]) -> None:
    clock, kicked = Clock(), []
    rec = await reconciler(s3, clock, kicked)
    await create(
        kube,
        pipeline("hourly", [custom("a", "pass")], s3, schedule="0 * * * *", concurrencyPolicy="Replace"),
        ns,
    )
    await rec.reconcile(ns, "hourly")
    clock.now += timedelta(minutes=3)
    await rec.reconcile(ns, "hourly")
    await set_phase(kube, ns, "hourly-202601011000", "Running")
    clock.now += timedelta(hours=1)
    await rec.reconcile(ns, "hourly")
    old = await get(kube, "pipelineruns", ns, "hourly-202601011000")
    assert old is not None and old["spec"]["cancelled"] is True
    assert await runs(kube, ns) == ["hourly-202601011000", "hourly-202601011100"]
    await rec.kube.close()


async def test_history_limit_prunes_the_oldest_finished_runs(kube: Api, ns: str, s3: dict[str, str]) -> None:
    clock, kicked = Clock(), []
    rec = await reconciler(s3, clock, kicked)
    await create(kube, pipeline("kept", [custom("a", "pass")], s3, historyLimit=2), ns)
    for i in range(4):
        await create(kube, run_of("kept", f"k{i}"), ns)
        await set_phase(kube, ns, f"k{i}", "Succeeded", f"2026-01-01T10:0{i}:00Z")
    await create(kube, run_of("kept", "k4"), ns)  # still running: never pruned
    await set_phase(kube, ns, "k4", "Running")
    await rec.reconcile(ns, "kept")
    assert await runs(kube, ns) == ["k2", "k3", "k4"]
    await rec.kube.close()


async def test_valid_pipeline_kicks_its_waiting_runs(kube: Api, ns: str, s3: dict[str, str]) -> None:
    clock, kicked = Clock(), []
    rec = await reconciler(s3, clock, kicked)
    await create(kube, run_of("fixme", "w1"), ns)
    await create(kube, pipeline("fixme", [custom("a", "pass", dependsOn=["a"])], s3), ns)
    await rec.reconcile(ns, "fixme")
    assert kicked == []  # invalid: nothing to start
    await merge_patch(kube, "pipelines", ns, "fixme", {"spec": {"stages": [custom("a", "pass")]}})
    await rec.reconcile(ns, "fixme")
    assert kicked == ["w1"]
    obj = await get(kube, "pipelines", ns, "fixme")
    assert obj is not None and obj["status"]["conditions"][0]["status"] == "True"
    assert obj["metadata"]["generation"] == 2 and obj["status"]["observedGeneration"] == 2
    await rec.kube.close()
