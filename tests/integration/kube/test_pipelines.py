"""The Pipeline reconciler against the API emulator, with an injected clock: schedules,
concurrency policies and history limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.kube.client import Connection, KubeClient
from conveyor.kube.pipelines import PipelineReconciler
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver
from tests.integration.kube.cluster import ApiServer
from tests.integration.kube.conftest import create, patch
from tests.integration.kube.test_operator_runs import RUNS, custom, pipeline, run_of


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 9, 58, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def reconciler(
    api: ApiServer, s3: dict[str, str], clock: Clock, kicked: list[str]
) -> PipelineReconciler:
    async def kick(namespace: str, name: str) -> None:
        kicked.append(name)

    kube = KubeClient(Connection(server=str(api.url).rstrip("/")))
    return PipelineReconciler(kube, StoreResolver(Settings(s3_endpoint=s3["endpoint"])), kick, clock)


def runs(api: ApiServer) -> list[str]:
    return sorted(r["metadata"]["name"] for r in api.objects_of(RUNS))


async def set_phase(api: ApiServer, name: str, phase: str, done: str | None = None) -> None:
    body: dict[str, Any] = {"status": {"phase": phase}}
    if done:
        body["status"]["completionTime"] = done
    resp = await api.patch(
        f"/apis/conveyor.dev/v1alpha1/namespaces/default/pipelineruns/{name}/status",
        json=body,
        headers={"Content-Type": "application/merge-patch+json"},
    )
    resp.release()


async def test_schedule_creates_one_run_per_due_time_and_forbid_skips(
    api: ApiServer, s3: dict[str, str]
) -> None:
    clock, kicked = Clock(), []
    rec = await reconciler(api, s3, clock, kicked)
    await create(
        api,
        pipeline("nightly", [custom("a", "pass")], s3, schedule="*/5 * * * *", concurrencyPolicy="Forbid"),
    )
    await rec.reconcile("default", "nightly")  # first sight: starts the schedule, creates nothing
    assert runs(api) == []
    clock.now += timedelta(minutes=3)  # 10:01 -> the 10:00 slot is due
    await rec.reconcile("default", "nightly")
    await rec.reconcile("default", "nightly")  # idempotent: no second run for the same slot
    assert runs(api) == ["nightly-202601011000"]
    run = api.get_object(RUNS, "default", "nightly-202601011000")
    assert run is not None and run["metadata"]["labels"]["conveyor.dev/trigger"] == "schedule"
    assert run["metadata"]["ownerReferences"][0]["kind"] == "Pipeline"
    clock.now += timedelta(minutes=5)  # 10:06: due again, but the first run is still active
    await rec.reconcile("default", "nightly")
    assert runs(api) == ["nightly-202601011000"]
    await set_phase(api, "nightly-202601011000", "Succeeded", "2026-01-01T10:07:00Z")
    clock.now += timedelta(minutes=5)  # 10:11
    await rec.reconcile("default", "nightly")
    assert runs(api) == ["nightly-202601011000", "nightly-202601011010"]
    await rec.kube.close()


async def test_replace_policy_cancels_the_active_run(api: ApiServer, s3: dict[str, str]) -> None:
    clock, kicked = Clock(), []
    rec = await reconciler(api, s3, clock, kicked)
    await create(
        api, pipeline("hourly", [custom("a", "pass")], s3, schedule="0 * * * *", concurrencyPolicy="Replace")
    )
    await rec.reconcile("default", "hourly")
    clock.now += timedelta(minutes=3)
    await rec.reconcile("default", "hourly")
    await set_phase(api, "hourly-202601011000", "Running")
    clock.now += timedelta(hours=1)
    await rec.reconcile("default", "hourly")
    old = api.get_object(RUNS, "default", "hourly-202601011000")
    assert old is not None and old["spec"]["cancelled"] is True
    assert runs(api) == ["hourly-202601011000", "hourly-202601011100"]
    await rec.kube.close()


async def test_history_limit_prunes_the_oldest_finished_runs(api: ApiServer, s3: dict[str, str]) -> None:
    clock, kicked = Clock(), []
    rec = await reconciler(api, s3, clock, kicked)
    await create(api, pipeline("kept", [custom("a", "pass")], s3, historyLimit=2))
    for i in range(4):
        await create(api, run_of("kept", f"k{i}"))
        await set_phase(api, f"k{i}", "Succeeded", f"2026-01-01T10:0{i}:00Z")
    await create(api, run_of("kept", "k4"))  # still running: never pruned
    await set_phase(api, "k4", "Running")
    await rec.reconcile("default", "kept")
    assert runs(api) == ["k2", "k3", "k4"]
    await rec.kube.close()


async def test_valid_pipeline_kicks_its_waiting_runs(api: ApiServer, s3: dict[str, str]) -> None:
    clock, kicked = Clock(), []
    rec = await reconciler(api, s3, clock, kicked)
    await create(api, run_of("fixme", "w1"))
    await create(api, pipeline("fixme", [custom("a", "pass", dependsOn=["a"])], s3))
    await rec.reconcile("default", "fixme")
    assert kicked == []  # invalid: nothing to start
    await patch(api, "pipelines", "fixme", {"spec": {"stages": [custom("a", "pass")]}})
    await rec.reconcile("default", "fixme")
    assert kicked == ["w1"]
    obj = api.get_object("conveyor.dev/v1alpha1/pipelines", "default", "fixme")
    assert obj is not None and obj["status"]["conditions"][0]["status"] == "True"
    assert obj["metadata"]["generation"] == 2 and obj["status"]["observedGeneration"] == 2
    await rec.kube.close()
