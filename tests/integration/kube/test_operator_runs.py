"""The real operator against a real control plane: the Job controller retries and times out,
the garbage collector deletes, the process kubelet runs each pod's command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from conveyor.artifacts.store import S3Store
from tests.cluster.api import Api
from tests.cluster.cluster import Cluster
from tests.integration.kube.conftest import (
    OperatorProcess,
    create,
    delete,
    get,
    items,
    merge_patch,
    namespace_gone,
    wait_for,
)
from tests.integration.kube.runs_helpers import (
    breast_cancer,
    custom,
    events_of,
    finished,
    job_creations,
    pipeline,
    run_of,
    run_status,
    stage_map,
)


@pytest.mark.slow
async def test_breast_cancer_pipeline_succeeds_and_the_same_run_again_creates_no_job(
    kube: Api, ns: str, operator: OperatorProcess, cluster: Cluster, s3: dict[str, str]
) -> None:
    await create(kube, breast_cancer(s3), ns)
    await create(kube, run_of("breast-cancer", "bc-1"), ns)
    st = await wait_for(lambda: finished(kube, ns, "bc-1"), timeout=180, what="run bc-1 to finish")
    assert st["phase"] == "Succeeded", st
    cond = st["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Succeeded", "True", "Succeeded")
    assert st["model"]["metrics"]["accuracy"] >= 0.95 and st["model"]["promoted"] is True
    assert st["model"]["uri"].startswith(f"s3://{s3['bucket']}/conveyor/{ns}/breast-cancer/bc-1/train/")
    assert [s["phase"] for s in st["stages"]] == ["Succeeded"] * 5
    assert len(await items(kube, "jobs", ns)) == 5
    store = S3Store(s3["bucket"], "conveyor")
    assert f"{ns}/breast-cancer/bc-1/run.json" in store.list(f"{ns}/breast-cancer/bc-1/")

    await create(kube, run_of("breast-cancer", "bc-2"), ns)
    st = await wait_for(lambda: finished(kube, ns, "bc-2"), timeout=120, what="run bc-2 to finish")
    assert st["phase"] == "Succeeded", st
    assert [s.get("cacheHit") for s in st["stages"]] == [True] * 5
    assert len(job_creations(cluster, ns)) == 5  # bc-2 created none


async def test_failing_stage_fails_the_run_with_its_message_and_retries_through_the_job_controller(
    kube: Api, ns: str, operator: OperatorProcess, s3: dict[str, str], shared_dir: Path
) -> None:
    counter = shared_dir / "attempts"
    flaky = custom(
        "flaky",
        f"""
        import pathlib, sys
        p = pathlib.Path({str(counter)!r})
        n = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(n))
        sys.exit(0 if n >= 3 else 1)
    """,
        retries=2,
    )
    broken = custom(
        "broken",
        """
        import os, sys
        open(os.environ["CONVEYOR_TERMINATION_LOG"], "w").write("feature store unreachable")
        sys.exit(1)
    """,
        dependsOn=["flaky"],
    )
    await create(kube, pipeline("p1", [flaky, broken, custom("after", "pass", dependsOn=["broken"])], s3), ns)
    await create(kube, run_of("p1", "r1"), ns)
    st = await wait_for(lambda: finished(kube, ns, "r1"), timeout=120, what="r1 to finish")
    stages = stage_map(st)
    assert st["phase"] == "Failed"
    assert st["conditions"][0]["reason"] == "StageFailed"
    assert st["conditions"][0]["message"] == "stage 'broken' failed: feature store unreachable"
    assert stages["flaky"]["phase"] == "Succeeded" and stages["flaky"]["attempts"] == 3
    assert (
        stages["broken"]["phase"] == "Failed" and stages["broken"]["message"] == "feature store unreachable"
    )
    assert stages["after"]["phase"] == "Skipped"
    job = await get(kube, "jobs", ns, "r1-flaky")
    assert job is not None and job["spec"]["backoffLimit"] == 2
    assert job["status"]["failed"] == 2 and job["status"]["succeeded"] == 1  # the Job controller's count
    assert counter.read_text() == "3"
    await wait_for(lambda: events_of(kube, ns, "r1"), timeout=10, what="the run's events")
    assert ("StageFailed", "stage 'broken' failed: feature store unreachable") in await events_of(
        kube, ns, "r1"
    )


async def test_stage_timeout_and_run_timeout(
    kube: Api, ns: str, operator: OperatorProcess, s3: dict[str, str]
) -> None:
    slow = custom("slow", "import time; time.sleep(120)", timeoutSeconds=2, retries=1)
    await create(kube, pipeline("p2", [slow], s3), ns)
    await create(kube, run_of("p2", "r2"), ns)
    st = await wait_for(lambda: finished(kube, ns, "r2"), timeout=90, what="r2 to finish")
    assert stage_map(st)["slow"]["message"] == "timed out after 2s"
    assert stage_map(st)["slow"]["attempts"] == 2  # the limit is per attempt: the retry ran
    assert st["conditions"][0]["reason"] == "StageFailed"
    job = await get(kube, "jobs", ns, "r2-slow")
    assert job is not None and job["status"]["failed"] == 2
    pods = await items(kube, "pods", ns, "batch.kubernetes.io/job-name=r2-slow")
    assert [p["status"].get("reason") for p in pods] == ["DeadlineExceeded"] * 2

    await create(kube, pipeline("p3", [custom("slow", "import time; time.sleep(120)")], s3), ns)
    await create(kube, run_of("p3", "r3", timeoutSeconds=3), ns)
    st = await wait_for(lambda: finished(kube, ns, "r3"), timeout=60, what="r3 to finish")
    assert st["phase"] == "Failed"
    assert st["conditions"][0]["reason"] == "TimedOut"
    assert stage_map(st)["slow"]["phase"] == "Cancelled"
    await wait_for(lambda: _gone(kube, "jobs", ns, "r3-slow"), what="r3's Job deleted")


async def _gone(kube: Api, plural: str, ns: str, name: str) -> bool:
    return await get(kube, plural, ns, name) is None


async def _pods_of_job(kube: Api, ns: str, job: str) -> list[dict[str, Any]]:
    return await items(kube, "pods", ns, f"batch.kubernetes.io/job-name={job}")


async def test_cancel_terminates_the_pods(
    kube: Api, ns: str, operator: OperatorProcess, s3: dict[str, str], shared_dir: Path
) -> None:
    started = shared_dir / "started"
    sleeper = custom(
        "sleeper",
        f"""
        import pathlib, time
        pathlib.Path({str(started)!r}).write_text("yes")
        time.sleep(120)
    """,
    )
    await create(kube, pipeline("p4", [sleeper, custom("next", "pass", dependsOn=["sleeper"])], s3), ns)
    await create(kube, run_of("p4", "r4"), ns)
    await wait_for(started.exists, what="the stage to start")
    assert len(await _pods_of_job(kube, ns, "r4-sleeper")) == 1
    await merge_patch(kube, "pipelineruns", ns, "r4", {"spec": {"cancelled": True}})
    st = await wait_for(lambda: finished(kube, ns, "r4"), what="r4 to finish")
    assert st["phase"] == "Cancelled" and st["conditions"][0]["reason"] == "Cancelled"
    assert [s["phase"] for s in st["stages"]] == ["Cancelled", "Cancelled"]
    await wait_for(lambda: _gone(kube, "jobs", ns, "r4-sleeper"), what="the Job to be deleted")
    await wait_for(lambda: _none(_pods_of_job(kube, ns, "r4-sleeper")), what="the pod to be terminated")


async def _none(listing: Any) -> bool:
    return not await listing


async def test_restart_mid_run_creates_no_job_twice(
    kube: Api, ns: str, operator: OperatorProcess, cluster: Cluster, s3: dict[str, str], shared_dir: Path
) -> None:
    gate = shared_dir / "go"
    wait = custom(
        "wait",
        f"""
        import pathlib, time
        while not pathlib.Path({str(gate)!r}).exists():
            time.sleep(0.05)
    """,
    )
    stages = [
        custom("a", "pass"),
        {**wait, "dependsOn": ["a"]},
        custom("c", "pass", dependsOn=["wait"]),
        custom("d", "pass", dependsOn=["wait"]),
    ]
    await create(kube, pipeline("p5", stages, s3), ns)
    await create(kube, run_of("p5", "r5"), ns)
    await wait_for(lambda: get(kube, "jobs", ns, "r5-wait"), what="the wait stage's Job")
    await operator.stop()
    gate.write_text("go")  # the stage finishes while the operator is down

    async def wait_job_done() -> Any:
        job = await get(kube, "jobs", ns, "r5-wait") or {}
        return job.get("status", {}).get("succeeded")

    await wait_for(wait_job_done, what="the wait Job to complete")
    await operator.start()
    st = await wait_for(lambda: finished(kube, ns, "r5"), timeout=60, what="r5 to finish")
    assert st["phase"] == "Succeeded"
    assert sorted(job_creations(cluster, ns)) == ["r5-a", "r5-c", "r5-d", "r5-wait"]


async def test_run_waits_for_its_pipeline_then_starts(
    kube: Api, ns: str, operator: OperatorProcess, s3: dict[str, str]
) -> None:
    await create(kube, run_of("later", "r6"), ns)
    st = await wait_for(lambda: _with_condition(kube, ns, "r6"), what="r6 to get a condition")
    cond = st["conditions"][0]
    assert (st["phase"], cond["status"], cond["reason"]) == ("Pending", "Unknown", "PipelineNotFound")
    assert not await items(kube, "jobs", ns)
    await create(kube, pipeline("later", [custom("only", "pass")], s3), ns)
    st = await wait_for(lambda: finished(kube, ns, "r6"), timeout=60, what="r6 to finish")
    assert st["phase"] == "Succeeded"


async def _with_condition(kube: Api, ns: str, name: str) -> dict[str, Any] | None:
    st = await run_status(kube, ns, name)
    return st if st.get("conditions") else None


async def test_invalid_pipeline_is_marked_and_gets_no_jobs(
    kube: Api, ns: str, operator: OperatorProcess, s3: dict[str, str]
) -> None:
    bad = pipeline("cyclic", [custom("a", "pass", dependsOn=["b"]), custom("b", "pass", dependsOn=["a"])], s3)
    await create(kube, bad, ns)
    await create(kube, run_of("cyclic", "r7"), ns)

    async def ready() -> dict[str, Any] | None:
        obj = await get(kube, "pipelines", ns, "cyclic") or {}
        conds = (obj.get("status") or {}).get("conditions") or []
        return conds[0] if conds else None

    cond = await wait_for(ready, what="the pipeline's Ready condition")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert "cycle: a -> b -> a" in cond["message"]
    st = await wait_for(lambda: _with_condition(kube, ns, "r7"), what="r7 condition")
    assert st["conditions"][0]["reason"] == "InvalidSpec" and "cycle" in st["conditions"][0]["message"]
    assert not await items(kube, "jobs", ns)


async def test_max_concurrent_runs_queues_runs(
    kube: Api, ns: str, operator: OperatorProcess, s3: dict[str, str]
) -> None:
    stages = [
        custom("one", "import time; time.sleep(0.5)"),
        custom("two", "import time; time.sleep(0.5)", dependsOn=["one"]),
    ]
    await create(kube, pipeline("serial", stages, s3, maxConcurrentRuns=1), ns)
    for i in range(3):
        await create(kube, run_of("serial", f"q{i}"), ns)
    peak, queued_seen = 0, False
    while not all([await finished(kube, ns, f"q{i}") for i in range(3)]):
        active = {
            j["metadata"]["ownerReferences"][0]["name"]
            for j in await items(kube, "jobs", ns)
            if not (j.get("status") or {}).get("conditions")
        }
        peak = max(peak, len(active))
        for i in range(3):
            conds = (await run_status(kube, ns, f"q{i}")).get("conditions") or [{}]
            queued_seen |= conds[0].get("reason") == "Queued"
        await asyncio.sleep(0.05)
    assert peak == 1
    assert queued_seen
    assert [(await finished(kube, ns, f"q{i}") or {}).get("phase") for i in range(3)] == ["Succeeded"] * 3


async def test_deleting_a_run_collects_its_jobs_and_the_same_name_runs_again(
    kube: Api, ns: str, operator: OperatorProcess, cluster: Cluster, s3: dict[str, str], shared_dir: Path
) -> None:
    marker = shared_dir / "runs"
    count = custom(
        "count",
        f"""
        import pathlib
        p = pathlib.Path({str(marker)!r})
        p.write_text(p.read_text() + "x" if p.exists() else "x")
    """,
    )
    await create(kube, pipeline("p8", [{**count, "cache": False}], s3), ns)
    await create(kube, run_of("p8", "again"), ns)
    st = await wait_for(lambda: finished(kube, ns, "again"), timeout=60, what="the first run")
    assert st["phase"] == "Succeeded"
    first_uid = (await get(kube, "pipelineruns", ns, "again") or {})["metadata"]["uid"]
    await delete(kube, "pipelineruns", ns, "again")
    await wait_for(lambda: _none(items(kube, "jobs", ns)), what="the garbage collector to delete the Job")
    await wait_for(lambda: _none(items(kube, "pods", ns)), what="the garbage collector to delete the pod")

    await create(kube, run_of("p8", "again"), ns)
    st = await wait_for(
        lambda: _finished_other(kube, ns, "again", first_uid), timeout=60, what="the second run"
    )
    assert st["phase"] == "Succeeded"
    assert marker.read_text() == "xx"  # the stage ran again
    assert job_creations(cluster, ns) == ["again-count", "again-count"]


async def _finished_other(kube: Api, ns: str, name: str, old_uid: str) -> dict[str, Any] | None:
    obj = await get(kube, "pipelineruns", ns, name) or {}
    if obj.get("metadata", {}).get("uid") == old_uid:
        return None
    return await finished(kube, ns, name)


async def test_names_of_63_characters_and_longer_work_end_to_end(
    kube: Api, ns: str, operator: OperatorProcess, s3: dict[str, str]
) -> None:
    """Names up to 63 characters are used as they are; a longer run name (a valid object name
    up to 253) is hashed wherever a label value or a child's name must fit in 63."""
    pipe_name = "p" * 63
    stages = [custom("first", "pass"), custom("second", "pass", dependsOn=["first"])]
    await create(kube, pipeline(pipe_name, stages, s3), ns)
    runs = ["r" * 63, "long-" + "r" * 65]  # 63 and 70 characters
    for name in runs:
        await create(kube, run_of(pipe_name, name), ns)
    for name in runs:
        st = await wait_for(lambda n=name: finished(kube, ns, n), timeout=90, what=f"run {name}")
        assert st["phase"] == "Succeeded", st
    jobs = await items(kube, "jobs", ns)
    assert len(jobs) == 4 and all(len(j["metadata"]["name"]) <= 63 for j in jobs)
    assert {j["metadata"]["ownerReferences"][0]["name"] for j in jobs} == set(runs)


async def test_namespace_deletion_completes_with_the_operator_stopped(
    kube: Api, ns: str, operator: OperatorProcess, s3: dict[str, str], shared_dir: Path
) -> None:
    await create(kube, pipeline("p9", [custom("sleepy", "import time; time.sleep(120)")], s3), ns)
    await create(kube, run_of("p9", "r9"), ns)
    await wait_for(lambda: items(kube, "pods", ns), what="the stage pod")
    await operator.stop()
    await kube.call("DELETE", f"/api/v1/namespaces/{ns}")
    await namespace_gone(kube, ns, timeout=90)
