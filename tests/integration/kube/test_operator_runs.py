"""The real operator against the API emulator, with Jobs run for real by the test kubelet."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from conveyor.artifacts.store import S3Store
from tests.conftest import EXAMPLES
from tests.integration.kube.cluster import ApiServer
from tests.integration.kube.conftest import OperatorProcess, create, patch, wait_for
from tests.integration.kube.kubelet import Kubelet

RUNS = "conveyor.dev/v1alpha1/pipelineruns"
PIPELINES = "conveyor.dev/v1alpha1/pipelines"
JOBS = "batch/v1/jobs"


def breast_cancer(s3: dict[str, str]) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / "breast-cancer" / "pipeline.yaml").read_text())
    doc["spec"]["artifacts"] = {
        "s3": {
            "bucket": s3["bucket"],
            "prefix": "conveyor",
            "endpoint": s3["endpoint"],
            "credentialsSecret": "s3-credentials",
        }
    }
    return doc


def run_of(pipeline: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"pipelineRef": {"name": pipeline}, **spec},
    }


def status(api: ApiServer, name: str) -> dict[str, Any]:
    obj = api.get_object(RUNS, "default", name) or {}
    return dict(obj.get("status") or {})


def finished(api: ApiServer, name: str) -> dict[str, Any] | None:
    st = status(api, name)
    return st if st.get("phase") in ("Succeeded", "Failed", "Cancelled") else None


@pytest.mark.slow
async def test_breast_cancer_pipeline_succeeds(
    api: ApiServer, operator: OperatorProcess, kubelet: Kubelet, s3: dict[str, str]
) -> None:
    await create(api, breast_cancer(s3))
    await create(api, run_of("breast-cancer", "bc-1"))
    st = await wait_for(lambda: finished(api, "bc-1"), timeout=120, what="run bc-1 to finish")
    assert st["phase"] == "Succeeded", st
    cond = st["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Succeeded", "True", "Succeeded")
    assert st["model"]["metrics"]["accuracy"] >= 0.95 and st["model"]["promoted"] is True
    assert st["model"]["uri"].startswith(f"s3://{s3['bucket']}/conveyor/default/breast-cancer/bc-1/train/")
    assert [s["phase"] for s in st["stages"]] == ["Succeeded"] * 5
    assert len(api.objects_of(JOBS)) == 5
    store = S3Store(s3["bucket"], "conveyor")
    assert "default/breast-cancer/bc-1/run.json" in store.list("default/breast-cancer/bc-1/")


def custom(name: str, code: str, **extra: Any) -> dict[str, Any]:
    """A custom stage: the test kubelet runs its command on this machine."""
    import sys
    import textwrap

    return {
        "name": name,
        "image": "python:3.11-slim",
        "command": [sys.executable, "-c", textwrap.dedent(code)],
        **extra,
    }


def pipeline(name: str, stages: list[dict[str, Any]], s3: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"stages": stages, "artifacts": {"s3": {"bucket": s3["bucket"], "prefix": name}}, **spec},
    }


def stage_map(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in st.get("stages", [])}


def events(api: ApiServer, involved: str) -> list[tuple[str, str]]:
    return [
        (e["reason"], e["message"])
        for e in api.objects_of("v1/events")
        if e["involvedObject"]["name"] == involved
    ]


async def test_failing_stage_fails_the_run_with_its_message_and_retries_count(
    api: ApiServer, operator: OperatorProcess, kubelet: Kubelet, s3: dict[str, str], tmp_path: Any
) -> None:
    counter = tmp_path / "attempts"
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
    await create(api, pipeline("p1", [flaky, broken, custom("after", "pass", dependsOn=["broken"])], s3))
    await create(api, run_of("p1", "r1"))
    st = await wait_for(lambda: finished(api, "r1"), what="r1 to finish")
    stages = stage_map(st)
    assert st["phase"] == "Failed"
    assert st["conditions"][0]["reason"] == "StageFailed"
    assert st["conditions"][0]["message"] == "stage 'broken' failed: feature store unreachable"
    assert stages["flaky"]["phase"] == "Succeeded" and stages["flaky"]["attempts"] == 3
    assert (
        stages["broken"]["phase"] == "Failed" and stages["broken"]["message"] == "feature store unreachable"
    )
    assert stages["after"]["phase"] == "Skipped"
    job = api.get_object(JOBS, "default", "r1-flaky")
    assert job is not None and job["spec"]["backoffLimit"] == 2
    await wait_for(
        lambda: ("StageFailed", "stage 'broken' failed: feature store unreachable") in events(api, "r1"),
        timeout=5,
        what="the StageFailed event",
    )
    assert [r for r, _ in events(api, "r1")] == ["Running", "StageFailed"]


async def test_stage_timeout_and_run_timeout(
    api: ApiServer, operator: OperatorProcess, kubelet: Kubelet, s3: dict[str, str]
) -> None:
    slow = custom("slow", "import time; time.sleep(60)", timeoutSeconds=1)
    await create(api, pipeline("p2", [slow], s3))
    await create(api, run_of("p2", "r2"))
    st = await wait_for(lambda: finished(api, "r2"), what="r2 to finish")
    assert stage_map(st)["slow"]["message"] == "timed out after 1s"
    assert st["conditions"][0]["reason"] == "StageFailed"

    await create(api, pipeline("p3", [custom("slow", "import time; time.sleep(60)")], s3))
    await create(api, run_of("p3", "r3", timeoutSeconds=2))
    st = await wait_for(lambda: finished(api, "r3"), what="r3 to finish")
    assert st["phase"] == "Failed"
    assert st["conditions"][0]["reason"] == "TimedOut"
    assert stage_map(st)["slow"]["phase"] == "Cancelled"
    await wait_for(lambda: api.get_object(JOBS, "default", "r3-slow") is None, what="r3's Job deleted")


async def test_cancel_deletes_running_jobs(
    api: ApiServer, operator: OperatorProcess, kubelet: Kubelet, s3: dict[str, str], tmp_path: Any
) -> None:
    started = tmp_path / "started"
    sleeper = custom(
        "sleeper",
        f"""
        import pathlib, time
        pathlib.Path({str(started)!r}).write_text("yes")
        time.sleep(60)
    """,
    )
    await create(api, pipeline("p4", [sleeper, custom("next", "pass", dependsOn=["sleeper"])], s3))
    await create(api, run_of("p4", "r4"))
    await wait_for(started.exists, what="the stage to start")
    await patch(api, "pipelineruns", "r4", {"spec": {"cancelled": True}})
    st = await wait_for(lambda: finished(api, "r4"), what="r4 to finish")
    assert st["phase"] == "Cancelled" and st["conditions"][0]["reason"] == "Cancelled"
    assert [s["phase"] for s in st["stages"]] == ["Cancelled", "Cancelled"]
    await wait_for(lambda: not api.objects_of(JOBS), what="the Job to be deleted")
    assert ("delete", "batch/jobs") in api.calls


async def test_restart_resumes_without_creating_any_job_twice(
    api: ApiServer, operator: OperatorProcess, kubelet: Kubelet, s3: dict[str, str], tmp_path: Any
) -> None:
    gate = tmp_path / "go"
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
    await create(api, pipeline("p5", stages, s3))
    await create(api, run_of("p5", "r5"))
    await wait_for(lambda: api.get_object(JOBS, "default", "r5-wait"), what="the wait stage's Job")
    await operator.stop()
    gate.write_text("go")  # the stage finishes while the operator is down
    await wait_for(
        lambda: (api.get_object(JOBS, "default", "r5-wait") or {}).get("status", {}).get("succeeded"),
        what="the wait Job to complete",
    )
    await operator.start()
    st = await wait_for(lambda: finished(api, "r5"), what="r5 to finish")
    assert st["phase"] == "Succeeded"
    job_creates = {k: v for k, v in api.creates.items() if k[0] == "batch/jobs"}
    assert sorted(name for _, _, name in job_creates) == ["r5-a", "r5-c", "r5-d", "r5-wait"]
    assert set(job_creates.values()) == {1}


async def test_run_waits_for_its_pipeline_then_starts(
    api: ApiServer, operator: OperatorProcess, kubelet: Kubelet, s3: dict[str, str]
) -> None:
    await create(api, run_of("later", "r6"))
    await wait_for(lambda: status(api, "r6").get("conditions"), what="r6 to get a condition")
    cond = status(api, "r6")["conditions"][0]
    assert (status(api, "r6")["phase"], cond["status"], cond["reason"]) == (
        "Pending",
        "Unknown",
        "PipelineNotFound",
    )
    assert not api.objects_of(JOBS)
    await create(api, pipeline("later", [custom("only", "pass")], s3))
    st = await wait_for(lambda: finished(api, "r6"), timeout=30, what="r6 to finish")
    assert st["phase"] == "Succeeded"


async def test_invalid_pipeline_is_marked_and_gets_no_jobs(
    api: ApiServer, operator: OperatorProcess, kubelet: Kubelet, s3: dict[str, str]
) -> None:
    bad = pipeline("cyclic", [custom("a", "pass", dependsOn=["b"]), custom("b", "pass", dependsOn=["a"])], s3)
    await create(api, bad)
    await create(api, run_of("cyclic", "r7"))

    def ready() -> dict[str, Any] | None:
        obj = api.get_object(PIPELINES, "default", "cyclic") or {}
        conds = (obj.get("status") or {}).get("conditions") or []
        return conds[0] if conds else None

    cond = await wait_for(ready, what="the pipeline's Ready condition")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert "cycle: a -> b -> a" in cond["message"]
    run_cond = await wait_for(lambda: (status(api, "r7").get("conditions") or [None])[0], what="r7 condition")
    assert run_cond["reason"] == "InvalidSpec" and "cycle" in run_cond["message"]
    assert not api.objects_of(JOBS)


async def test_max_concurrent_runs_queues_runs(
    api: ApiServer, operator: OperatorProcess, kubelet: Kubelet, s3: dict[str, str]
) -> None:
    import asyncio

    stages = [
        custom("one", "import time; time.sleep(0.3)"),
        custom("two", "import time; time.sleep(0.3)", dependsOn=["one"]),
    ]
    await create(api, pipeline("serial", stages, s3, maxConcurrentRuns=1))
    for i in range(3):
        await create(api, run_of("serial", f"q{i}"))
    peak = 0
    queued_seen = False
    while not all(finished(api, f"q{i}") for i in range(3)):
        active_runs = {
            j["metadata"]["labels"]["conveyor.dev/pipelinerun"]
            for j in api.objects_of(JOBS)
            if not (j.get("status") or {}).get("conditions")
        }
        peak = max(peak, len(active_runs))
        queued_seen |= any(
            (status(api, f"q{i}").get("conditions") or [{}])[0].get("reason") == "Queued" for i in range(3)
        )
        await asyncio.sleep(0.02)
    assert peak == 1
    assert queued_seen
    assert [finished(api, f"q{i}")["phase"] for i in range(3)] == ["Succeeded"] * 3  # type: ignore[index]
