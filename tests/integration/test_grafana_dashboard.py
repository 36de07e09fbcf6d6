"""The Grafana dashboard: every query names metrics that Conveyor really exports (as the
operator and the model server define them) and is PromQL that Prometheus parses (promtool)."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY, CollectorRegistry

from conveyor.serving.monitor import REGISTRY as SERVING
from tests.conftest import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "conveyor-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported(*registries: CollectorRegistry) -> set[str]:
    return {
        family.name + suffix
        for registry in registries
        for family in registry.collect()
        if family.name.startswith("conveyor_")
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], t["expr"]) for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_every_query_uses_metrics_conveyor_exports() -> None:
    for module in ("conveyor.kube.metrics", "conveyor.serving.quality"):  # define the metrics
        importlib.import_module(module)
    names = exported(REGISTRY, SERVING)
    used = {name for _, expr in queries() for name in re.findall(r"\bconveyor_[a-z_]+", expr)}
    assert used - names == set()
    # runs, stage durations, hand-off, requests, latency, drift per feature, live quality
    for wanted in (
        "conveyor_pipelineruns_finished_total",
        "conveyor_stage_duration_seconds_bucket",
        "conveyor_stage_handoff_seconds_bucket",
        "conveyor_requests_total",
        "conveyor_request_duration_seconds_bucket",
        "conveyor_feature_drift",
        "conveyor_model_quality",
    ):
        assert wanted in used, wanted


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query as a recording rule: `promtool check rules` parses it as Prometheus would."""
    grafana = {"$__rate_interval": "5m", "$model": ".*"}
    rules: list[dict[str, Any]] = []
    for i, (_, expr) in enumerate(queries()):
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"conveyor:dashboard_{i}", "expr": expr})
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(rules)} rules found" in proc.stdout
