"""The PipelineRun reconciler against an API server that checks what a real one checks:
long names, a run deleted and created again under the same name, metrics that are not numbers."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor.api.common import API_VERSION
from conveyor.api.common import S3Store as S3Spec
from conveyor.artifacts import layout
from conveyor.artifacts.layout import StageResult
from conveyor.artifacts.store import LocalStore
from conveyor.engine.names import label_value
from conveyor.kube.runs import RunReconciler
from conveyor.kube.settings import Settings
from tests.unit.kube.fakeapi import FakeApi, FakeClient, valid_label_value

NS = "ml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = {
    "artifacts": {"s3": {"bucket": "bkt"}},
    "stages": [{"name": "s1", "image": "busybox:1", "command": ["true"], "cache": False}],
}
COMPLETE = {
    "succeeded": 1,
    "startTime": "2026-01-01T00:00:00Z",
    "completionTime": "2026-01-01T00:01:00Z",
    "conditions": [{"type": "Complete", "status": "True"}],
}


class Stores:
    def __init__(self, root: Path) -> None:
        self.store = LocalStore(root)

    def for_pipeline(self, spec: Any) -> tuple[LocalStore, S3Spec]:
        return self.store, S3Spec(bucket="bkt")


def run_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"pipelineSpec": SPEC},
    }


def setup(tmp_path: Path) -> tuple[FakeApi, RunReconciler, Stores]:
    api = FakeApi()
    stores = Stores(tmp_path / "store")
    reconciler = RunReconciler(FakeClient(api), Settings(), stores, clock=lambda: T0)  # type: ignore[arg-type]
    return api, reconciler, stores


def commit(stores: Stores, run: str, metrics: dict[str, float]) -> None:
    layout.commit_result(stores.store, layout.stage_prefix(NS, run, run, "s1"), StageResult(metrics=metrics))


async def test_a_run_with_a_long_name_sees_its_jobs(tmp_path: Path) -> None:
    api, reconciler, _ = setup(tmp_path)
    names = ["r" * 90 + "-one", "r" * 90 + "-two"]  # valid object names, too long for label values
    for name in names:
        api.put("pipelineruns", run_body(name))
        await reconciler.reconcile(NS, name)
        await reconciler.reconcile(NS, name)
    assert api.count("post", "jobs") == 2  # one each: the second look found it
    jobs = api.of("jobs")
    values = {j["metadata"]["labels"]["conveyor.dev/pipelinerun"] for j in jobs}
    assert len(values) == 2 and all(valid_label_value(v) for v in values)
    assert {j["metadata"]["ownerReferences"][0]["name"] for j in jobs} == set(names)
    assert values == {label_value(n) for n in names}


async def test_a_recreated_run_does_not_take_the_old_runs_job_or_outputs(tmp_path: Path) -> None:
    api, reconciler, stores = setup(tmp_path)
    api.put("pipelineruns", run_body("r1"))
    await reconciler.reconcile(NS, "r1")
    old = api.one("jobs", NS, "r1-s1")
    old["status"] = COMPLETE
    commit(stores, "r1", {"auc": 0.9})
    # The run is deleted and created again before the garbage collector removed its Job.
    del api.objects[("pipelineruns", NS, "r1")]
    new = api.put("pipelineruns", run_body("r1"))

    outcome = await reconciler.reconcile(NS, "r1")
    status = api.one("pipelineruns", NS, "r1")["status"]
    assert status["phase"] == "Running"
    (stage,) = status["stages"]
    assert stage["phase"] == "Pending"
    assert "r1-s1" in stage["message"] and "earlier PipelineRun" in stage["message"]
    assert not outcome.finished and outcome.requeue
    assert api.one("jobs", NS, "r1-s1")["metadata"]["uid"] == old["metadata"]["uid"]

    del api.objects[("jobs", NS, "r1-s1")]  # the garbage collector's part
    await reconciler.reconcile(NS, "r1")
    job = api.one("jobs", NS, "r1-s1")
    assert job["metadata"]["ownerReferences"][0]["uid"] == new["metadata"]["uid"]
    assert job["metadata"]["labels"]["conveyor.dev/pipelinerun-uid"] == new["metadata"]["uid"]
    assert (
        job["spec"]["template"]["metadata"]["labels"]["conveyor.dev/pipelinerun-uid"]
        == new["metadata"]["uid"]
    )
    assert api.one("pipelineruns", NS, "r1")["status"]["stages"][0]["phase"] == "Running"


async def test_a_job_of_another_owner_is_never_ours_even_with_our_labels(tmp_path: Path) -> None:
    api, reconciler, _ = setup(tmp_path)
    run = api.put("pipelineruns", run_body("r1"))
    await reconciler.reconcile(NS, "r1")
    job = api.one("jobs", NS, "r1-s1")
    job["status"] = COMPLETE
    job["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    await reconciler.reconcile(NS, "r1")
    assert api.one("pipelineruns", NS, "r1")["status"]["stages"][0]["phase"] == "Pending"
    assert run["metadata"]["uid"] != "someone-else"


async def test_non_finite_metrics_are_left_out_of_the_status_and_said_so(tmp_path: Path) -> None:
    api, reconciler, stores = setup(tmp_path)
    api.put("pipelineruns", run_body("r1"))
    await reconciler.reconcile(NS, "r1")
    api.one("jobs", NS, "r1-s1")["status"] = COMPLETE
    commit(stores, "r1", {"auc": math.nan, "loss": math.inf, "rows": 3.0})
    outcome = await reconciler.reconcile(NS, "r1")
    assert outcome.finished
    status = api.one("pipelineruns", NS, "r1")["status"]
    (stage,) = status["stages"]
    assert stage["phase"] == "Succeeded"
    assert stage["metrics"] == {"rows": 3.0}
    assert "auc (nan)" in stage["message"] and "loss (inf)" in stage["message"]


async def test_a_job_of_this_run_made_before_the_uid_label_is_still_ours(tmp_path: Path) -> None:
    api, reconciler, _ = setup(tmp_path)
    api.put("pipelineruns", run_body("r1"))
    await reconciler.reconcile(NS, "r1")
    job = api.one("jobs", NS, "r1-s1")
    del job["metadata"]["labels"]["conveyor.dev/pipelinerun-uid"]  # an older operator made it
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "boom"}
    job["status"] = {"failed": 1, "conditions": [failed]}
    assert (await reconciler.reconcile(NS, "r1")).finished
    status = api.one("pipelineruns", NS, "r1")["status"]
    assert (status["phase"], status["stages"][0]["phase"], status["stages"][0]["message"]) == (
        "Failed",
        "Failed",
        "boom",
    )
    assert api.count("post", "jobs") == 2  # the second was a 409: never two Jobs
