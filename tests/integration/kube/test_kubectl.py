"""kubectl as a real client: `kubectl apply` the example, the operator takes it to Succeeded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from conveyor.kube.settings import Settings
from tests.conftest import EXAMPLES, REPO
from tests.integration.kube.cluster import ApiServer
from tests.integration.kube.conftest import OperatorProcess, credentials_secret, wait_for
from tests.integration.kube.kubelet import Kubelet

sys.path.insert(0, str(REPO / "scripts"))
from k8s_tools import ensure


@pytest_asyncio.fixture
async def default_store_operator(api: ApiServer, s3: dict[str, str]) -> Any:
    """The operator as the chart configures it: a default store, since the example names none."""
    settings = Settings(
        image="conveyor:test",
        resync_seconds=2.0,
        credentials_secret="s3-credentials",
        s3_endpoint=s3["endpoint"],
        store=f"s3://{s3['bucket']}/conveyor",
        namespaces=["default"],
    )
    await credentials_secret(api)
    proc = OperatorProcess(api, settings)
    await proc.start()
    yield proc
    await proc.stop()


def kubectl(api: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(ensure() / "kubectl"), "--server", str(api.url).rstrip("/"), "--token", "test", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
async def test_kubectl_apply_then_the_run_succeeds(
    api: ApiServer, default_store_operator: OperatorProcess, kubelet: Kubelet, tmp_path: Path
) -> None:
    import asyncio

    proc = await asyncio.to_thread(
        kubectl, api, "apply", "--validate=false", "-f", str(EXAMPLES / "breast-cancer")
    )
    assert proc.returncode == 0, proc.stderr
    assert "pipeline.conveyor.dev/breast-cancer created" in proc.stdout
    assert "pipelinerun.conveyor.dev/breast-cancer-1 created" in proc.stdout

    def finished() -> dict[str, Any] | None:
        run = api.get_object("conveyor.dev/v1alpha1/pipelineruns", "default", "breast-cancer-1") or {}
        status = run.get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = await wait_for(finished, timeout=120, what="the applied run to finish")
    assert status["phase"] == "Succeeded"
    got = await asyncio.to_thread(kubectl, api, "get", "pipelinerun", "breast-cancer-1", "-o", "json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["status"]["phase"] == "Succeeded"
    listed = await asyncio.to_thread(kubectl, api, "get", "pipelineruns")
    assert listed.returncode == 0, listed.stderr
    assert "breast-cancer-1" in listed.stdout
