"""checkov on what Conveyor installs: the chart (defaults and every ci/*.yaml) and the stage Jobs
`conveyor render` prints. Every failure is one that deploy/checkov/skips.yaml explains, for the
resources it names, and every skip there is still needed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EXAMPLES, REPO
from tests.integration.test_helm import CHART, SCENARIOS
from tests.k8s import pod_spec_of

sys.path.insert(0, str(REPO / "scripts"))
from checkov_tool import ensure as ensure_checkov
from k8s_tools import ensure as ensure_k8s_tools

SKIPS = REPO / "deploy" / "checkov" / "skips.yaml"
QUIET = ["--quiet", "--compact", "--skip-download", "-o", "json"]  # failures only; offline


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    helm = ensure_k8s_tools() / "helm"
    for values in SCENARIOS:
        args = [str(helm), "template", "conveyor", str(CHART), "--namespace", "conveyor"]
        args += ["-f", str(CHART / "ci" / values)] if values else []
        name = (values or "defaults.yaml").removesuffix(".yaml")
        (out / f"chart-{name}.yaml").write_text(
            subprocess.run(args, capture_output=True, text=True, check=True).stdout
        )
    stage_resources = yaml.safe_load((CHART / "values.yaml").read_text())["stageResources"]
    env = {
        **os.environ,
        "CONVEYOR_STAGE_RESOURCES": json.dumps(stage_resources),  # as the chart sets it
        "CONVEYOR_CREDENTIALS_SECRET": "s3-credentials",
    }
    files = ["breast-cancer/pipeline.yaml", "breast-cancer/run.yaml"]
    args = [sys.executable, "-m", "conveyor", "render", "-n", "ml", "--store", "s3://mlops/cv"]
    args += [a for f in files for a in ("-f", str(EXAMPLES / f))]
    (out / "stage-jobs.yaml").write_text(
        subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout
    )
    return out


def failures(checkov: Path, folder: Path) -> list[tuple[str, str]]:
    proc = subprocess.run(
        [str(checkov), "-d", str(folder), "--framework", "kubernetes", *QUIET],
        capture_output=True,
        text=True,
    )
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert sum(r["summary"]["parsing_errors"] for r in reports) == 0
    assert sum(r["summary"]["resource_count"] for r in reports) > 50
    return [(f["check_id"], f["resource"]) for r in reports for f in r["results"]["failed_checks"]]


def test_every_failed_check_is_explained(rendered: Path) -> None:
    skips: list[dict[str, Any]] = yaml.safe_load(SKIPS.read_text())
    found = failures(ensure_checkov(), rendered)
    unexplained = [
        (check, resource)
        for check, resource in found
        if not any(
            s["check"] == check and any(re.fullmatch(r, resource) for r in s["resources"]) for s in skips
        )
    ]
    assert unexplained == [], "fix them, or explain them in deploy/checkov/skips.yaml"
    stale = {s["check"] for s in skips} - {check for check, _ in found}
    assert stale == set(), "these skips are no longer needed"
    for skip in skips:
        assert len(skip["why"]) > 80, skip["check"]


def test_what_the_skips_claim(rendered: Path) -> None:
    """CKV_K8S_38: only the operator's pod mounts a ServiceAccount token; CKV_K8S_40: the
    image's USER is a high UID."""
    for path in rendered.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = pod_spec_of(doc) if doc else None
            if spec is None:
                continue
            component = doc["metadata"]["labels"].get("app.kubernetes.io/component")
            if component != "operator":
                assert spec.get("automountServiceAccountToken") is False, (path.name, doc["metadata"]["name"])
    users = re.findall(r"^USER (\d+)", (REPO / "Dockerfile").read_text(), flags=re.M)
    assert users and all(int(u) >= 10000 for u in users)
