"""The real operator against the API emulator, with Jobs run for real by the test kubelet."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from conveyor.artifacts.store import S3Store
from tests.conftest import EXAMPLES
from tests.integration.kube.cluster import ApiServer
from tests.integration.kube.conftest import OperatorProcess, create, wait_for
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
