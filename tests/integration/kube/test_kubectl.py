"""kubectl 1.35 as users run it, against the real API server: server-side strict field
validation, the CRDs' CEL rules, printer columns and `kubectl wait`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from tests.cluster.api import Api
from tests.cluster.cluster import Cluster
from tests.conftest import EXAMPLES, REPO
from tests.integration.kube.conftest import OperatorProcess, namespace_gone, operator_settings

CRDS = REPO / "crds"


async def kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cluster.kubectl, *args, check=False)


@pytest_asyncio.fixture
async def default_store_operator(kube: Api, ns: str, s3: dict[str, str]) -> AsyncIterator[OperatorProcess]:
    """The operator as the chart configures it: a default store, since the examples name none."""
    proc = OperatorProcess(operator_settings(s3["endpoint"], store=f"s3://{s3['bucket']}/conveyor"))
    await proc.start()
    yield proc
    await kube.call("DELETE", f"/api/v1/namespaces/{ns}", ok=(404,))
    await namespace_gone(kube, ns, timeout=90)
    await proc.stop()


async def test_crds_and_every_example_apply_with_strict_server_side_validation(
    cluster: Cluster, ns: str
) -> None:
    proc = await kubectl(cluster, "apply", "--validate=strict", "-f", str(CRDS))
    assert proc.returncode == 0, proc.stderr
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        if not all(d.get("apiVersion", "").startswith("conveyor.dev/") for d in docs):
            continue  # Argo CD's objects need Argo CD's CRDs
        proc = await kubectl(cluster, "apply", "--validate=strict", "-n", ns, "-f", str(path))
        assert proc.returncode == 0, (path, proc.stderr)
    # a server-side dry run with the strictest validation of the same files
    proc = await kubectl(
        cluster,
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        ns,
        "-f",
        str(EXAMPLES / "breast-cancer"),
    )
    assert proc.returncode == 0, proc.stderr


async def test_an_unknown_field_is_refused_naming_it(cluster: Cluster, ns: str, tmp_path: Path) -> None:
    doc = yaml.safe_load((EXAMPLES / "breast-cancer" / "run.yaml").read_text())
    doc["spec"]["pipelineRefs"] = {"name": "typo"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = await kubectl(cluster, "apply", "--validate=strict", "-n", ns, "-f", str(path))
    assert proc.returncode != 0
    assert 'unknown field "spec.pipelineRefs"' in proc.stderr
    got = await kubectl(cluster, "get", "cvr", "-n", ns, "-o", "name")
    assert got.stdout.strip() == ""  # nothing half-applied


async def test_changing_a_runs_spec_is_refused_by_the_cel_rule(
    cluster: Cluster, ns: str, tmp_path: Path
) -> None:
    run = EXAMPLES / "breast-cancer" / "run.yaml"
    assert (await kubectl(cluster, "create", "-n", ns, "-f", str(run))).returncode == 0
    proc = await kubectl(
        cluster,
        "patch",
        "cvr",
        "breast-cancer-1",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec": {"params": {"min-accuracy": "0.5"}}}',
    )
    assert proc.returncode != 0
    assert "a PipelineRun's spec is immutable except `cancelled`" in proc.stderr
    proc = await kubectl(
        cluster,
        "patch",
        "cvr",
        "breast-cancer-1",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec": {"cancelled": true}}',
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
async def test_kubectl_apply_get_and_wait_for_a_run(
    cluster: Cluster, ns: str, default_store_operator: OperatorProcess
) -> None:
    proc = await kubectl(
        cluster,
        "apply",
        "-n",
        ns,
        "-f",
        str(EXAMPLES / "breast-cancer" / "pipeline.yaml"),
        "-f",
        str(EXAMPLES / "breast-cancer" / "run.yaml"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "pipeline.conveyor.dev/breast-cancer created" in proc.stdout
    assert "pipelinerun.conveyor.dev/breast-cancer-1 created" in proc.stdout
    waited = await kubectl(
        cluster, "wait", "-n", ns, "--for=condition=Succeeded", "--timeout=240s", "cvr/breast-cancer-1"
    )
    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout
    got = await kubectl(cluster, "get", "cvr", "breast-cancer-1", "-n", ns, "-o", "json")
    assert json.loads(got.stdout)["status"]["phase"] == "Succeeded"
    table = await kubectl(cluster, "get", "cvp,cvr", "-n", ns)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    run_header = next(line for line in lines if line.startswith("NAME") and "PHASE" in line)
    for column in ("PIPELINE", "PHASE", "STAGE", "DURATION"):
        assert column in run_header
    row = next(line for line in lines if line.startswith("pipelinerun.conveyor.dev/breast-cancer-1"))
    assert "breast-cancer" in row and "Succeeded" in row
    assert (
        await kubectl(cluster, "apply", "-n", ns, "-f", str(EXAMPLES / "breast-cancer" / "deployment.yaml"))
    ).returncode == 0
    cvm = await kubectl(cluster, "get", "cvm", "-n", ns)
    assert cvm.returncode == 0 and "breast-cancer" in cvm.stdout, cvm.stderr
