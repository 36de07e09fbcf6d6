"""Argo CD's Lua health checks for the three kinds, run with a real Lua (lupa) on sample objects."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from tests.conftest import REPO

HEALTH = REPO / "deploy" / "argocd"


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    script = (HEALTH / f"conveyor.dev_{kind}.lua").read_text()
    fn = lua.eval(f"function(obj) {script} end")
    result = fn(_to_lua(lua, obj))
    return str(result["status"]), str(result["message"])


def _to_lua(lua: LuaRuntime, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def cond(type_: str, status: str, reason: str = "R", message: str = "m") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


RUNS = [
    ({}, "Progressing", "Waiting for the Conveyor operator"),
    (
        {"status": {"conditions": [cond("Succeeded", "Unknown", "Running", "running: train")]}},
        "Progressing",
        "running: train",
    ),
    (
        {"status": {"conditions": [cond("Succeeded", "True", "Succeeded", "all 5 stages succeeded")]}},
        "Healthy",
        "all 5 stages succeeded",
    ),
    (
        {"status": {"conditions": [cond("Succeeded", "False", "StageFailed", "stage 'x' failed: boom")]}},
        "Degraded",
        "stage 'x' failed: boom",
    ),
    (
        {"status": {"conditions": [cond("Succeeded", "False", "Cancelled", "the run was cancelled")]}},
        "Suspended",
        "the run was cancelled",
    ),
]


@pytest.mark.parametrize(("obj", "status", "message"), RUNS)
def test_pipelinerun_health(obj: dict[str, Any], status: str, message: str) -> None:
    assert health("PipelineRun", obj) == (status, message)


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        ({}, "Progressing"),
        ({"status": {"conditions": [cond("Ready", "True", "Valid")]}}, "Healthy"),
        (
            {"status": {"conditions": [cond("Ready", "False", "InvalidSpec", "cycle: a -> b -> a")]}},
            "Degraded",
        ),
    ],
)
def test_pipeline_health(obj: dict[str, Any], status: str) -> None:
    assert health("Pipeline", obj)[0] == status


@pytest.mark.parametrize(
    ("conditions", "status", "message"),
    [
        (
            [cond("Ready", "True", "Available", "serving m1"), cond("Progressing", "False", "Succeeded")],
            "Healthy",
            "serving m1",
        ),
        (
            [
                cond("Ready", "False", "RollingOut", "rolling out m2"),
                cond("Progressing", "True", "RollingOut", "rolling out m2"),
            ],
            "Progressing",
            "rolling out m2",
        ),
        (
            [
                cond("Ready", "True", "Available"),
                cond("Progressing", "False", "RolloutFailed", "model m2 never became ready; serving m1"),
            ],
            "Degraded",
            "model m2 never became ready; serving m1",
        ),
        (
            [cond("Ready", "False", "ModelNotFound", "no promoted model yet")],
            "Degraded",
            "no promoted model yet",
        ),
    ],
)
def test_modeldeployment_health(conditions: list[dict[str, str]], status: str, message: str) -> None:
    assert health("ModelDeployment", {"status": {"conditions": conditions}}) == (status, message)


def test_argocd_cm_patch_is_generated_from_the_scripts() -> None:
    spec = importlib.util.spec_from_file_location("argocd_patch", REPO / "scripts" / "argocd_patch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (REPO / "examples" / "argocd" / "argocd-cm-patch.yaml").read_text()
    assert committed == module.patch(), "run python scripts/argocd_patch.py"
    data = yaml.safe_load(committed)["data"]
    assert sorted(data) == [
        f"resource.customizations.health.conveyor.dev_{k}"
        for k in ("ModelDeployment", "Pipeline", "PipelineRun")
    ]
    assert (
        Path(HEALTH / "conveyor.dev_PipelineRun.lua").read_text()
        == data["resource.customizations.health.conveyor.dev_PipelineRun"]
    )
