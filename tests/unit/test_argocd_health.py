"""Argo CD's Lua health checks for the three kinds, run with Lua 5.1 (lupa; Argo CD's gopher-lua
implements 5.1) on sample objects, among them the situations of Argo CD's own samples for an
Argo Rollout and a Tekton PipelineRun (see COMPARED below)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaRuntime

from tests.conftest import REPO

HEALTH = REPO / "deploy" / "argocd"
WAITING = "Waiting for the Conveyor operator"


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


def obj(
    *conditions: dict[str, str], generation: int = 1, observed: int | None = 1, **extra: Any
) -> dict[str, Any]:
    """An object at `generation` whose status the operator wrote for `observed`."""
    status: dict[str, Any] = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"name": "x", "generation": generation}, "status": status, **extra}


DELETING = {"deletionTimestamp": "2026-11-30T17:00:00Z"}

RUNS = [
    ({}, "Progressing", WAITING),
    (obj(cond("Succeeded", "Unknown", "Running", "running: train")), "Progressing", "running: train"),
    (
        obj(cond("Succeeded", "True", "Succeeded", "all 5 stages succeeded")),
        "Healthy",
        "all 5 stages succeeded",
    ),
    (
        obj(cond("Succeeded", "False", "StageFailed", "stage 'x' failed: boom")),
        "Degraded",
        "stage 'x' failed: boom",
    ),
    (obj(cond("Succeeded", "False", "TimedOut", "timed out after 60s")), "Degraded", "timed out after 60s"),
    (
        obj(cond("Succeeded", "False", "Cancelled", "the run was cancelled")),
        "Suspended",
        "the run was cancelled",
    ),
    # spec.cancelled set on a running run: the status still describes the running one
    (
        obj(cond("Succeeded", "Unknown", "Running", "running: train"), generation=2, observed=1),
        "Progressing",
        "Waiting for the Conveyor operator to observe generation 2",
    ),
    # a finished run is final: the operator never reads its spec again (but for an approval)
    (
        obj(cond("Succeeded", "True", "Succeeded", "done"), generation=2, observed=1),
        "Healthy",
        "done",
    ),
    # its model waits for a human: Suspended, as a paused Rollout; then a decision is set
    (
        obj(
            cond("Succeeded", "True", "Succeeded", "done"),
            cond("AwaitingApproval", "True", "AwaitingApproval", "approve it"),
        ),
        "Suspended",
        "approve it",
    ),
    (
        obj(
            cond("Succeeded", "True", "Succeeded", "done"),
            cond("AwaitingApproval", "True", "AwaitingApproval", "approve it"),
            generation=2,
            spec={"approval": {"decision": "Approve", "by": "ana"}},
        ),
        "Progressing",
        "Waiting for the Conveyor operator to observe generation 2",
    ),
    (
        obj(
            cond("Succeeded", "True", "Succeeded", "done"),
            cond("AwaitingApproval", "False", "Approved", "ok"),
        ),
        "Healthy",
        "done",
    ),
    (
        {**obj(cond("Succeeded", "True", "Succeeded", "done")), "metadata": {"name": "x", **DELETING}},
        "Progressing",
        "Pending deletion",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), RUNS)
def test_pipelinerun_health(body: dict[str, Any], status: str, message: str) -> None:
    assert health("PipelineRun", body) == (status, message)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, "Progressing", WAITING),
        (obj(cond("Ready", "True", "Valid", "valid")), "Healthy", "valid"),
        (obj(cond("Ready", "False", "InvalidSpec", "cycle: a -> b -> a")), "Degraded", "cycle: a -> b -> a"),
        (
            obj(cond("Ready", "True", "Valid", "valid"), generation=3, observed=2),
            "Progressing",
            "Waiting for the Conveyor operator to observe generation 3",
        ),
        (
            {**obj(cond("Ready", "True", "Valid")), "metadata": {"name": "x", **DELETING}},
            "Progressing",
            "Pending deletion",
        ),
    ],
)
def test_pipeline_health(body: dict[str, Any], status: str, message: str) -> None:
    assert health("Pipeline", body) == (status, message)


SERVING = [
    cond("Ready", "True", "Available", "serving m1"),
    cond("Progressing", "False", "Succeeded", "serving m1"),
]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (obj(*SERVING), "Healthy", "serving m1"),
        (
            obj(
                cond("Ready", "False", "RollingOut", "rolling out m2"),
                cond("Progressing", "True", "RollingOut", "rolling out m2"),
            ),
            "Progressing",
            "rolling out m2",
        ),
        # a new model rolls out while the previous one serves: Ready stays True, yet not Healthy
        (
            obj(
                cond("Ready", "True", "RollingOut", "rolling out m2: 1 of 3 new replicas updated"),
                cond("Progressing", "True", "RollingOut", "rolling out m2: 1 of 3 new replicas updated"),
            ),
            "Progressing",
            "rolling out m2: 1 of 3 new replicas updated",
        ),
        (
            obj(
                cond("Ready", "True", "Available"),
                cond("Progressing", "False", "RolloutFailed", "model m2 never became ready; serving m1"),
            ),
            "Degraded",
            "model m2 never became ready; serving m1",
        ),
        (
            obj(cond("Ready", "False", "ModelNotFound", "no promoted model yet")),
            "Degraded",
            "no promoted model yet",
        ),
        # spec changed (a new model URI): the old Healthy is not the answer for the new spec
        (
            obj(*SERVING, generation=2, observed=1),
            "Progressing",
            "Waiting for the Conveyor operator to observe generation 2",
        ),
        ({**obj(*SERVING), "metadata": {"name": "x", **DELETING}}, "Progressing", "Pending deletion"),
    ],
)
def test_modeldeployment_health(body: dict[str, Any], status: str, message: str) -> None:
    assert health("ModelDeployment", body) == (status, message)


# The situations of Argo CD's own samples, as Conveyor objects: (Argo CD sample, the health
# Argo CD's check gives it, our kind, our object, the health ours gives). Argo CD's verdicts are
# those of argoproj/argo-cd resource_customizations/argoproj.io/Rollout/health_test.yaml, of the
# Tekton PipelineRun check proposed in argo-cd pull request 28467 (Argo CD has no built-in
# Tekton check), and of gitops-engine's GetResourceHealth for an object being deleted (checked
# before any Lua runs). Where they differ, the reason is in docs: see DIFFERENCES.
ROLLOUT = "argoproj.io/Rollout/testdata/"
TEKTON = "tekton.dev/PipelineRun/testdata/ (PR 28467)"
COMPARED: list[tuple[str, str, str, dict[str, Any], str]] = [
    (
        ROLLOUT + "newRolloutWithoutStatus.yaml",
        "Progressing",
        "ModelDeployment",
        {"metadata": {"generation": 1}},
        "Progressing",
    ),
    (
        ROLLOUT + "progressing_newGeneration.yaml",
        "Progressing",
        "ModelDeployment",
        obj(*SERVING, generation=2, observed=1),
        "Progressing",
    ),
    (
        ROLLOUT + "degraded_invalidSpec.yaml",
        "Degraded",
        "ModelDeployment",
        obj(cond("Ready", "False", "InvalidSpec", "spec.model: give uri or fromPipeline")),
        "Degraded",
    ),
    (
        ROLLOUT + "degraded_rolloutTimeout.yaml",
        "Degraded",
        "ModelDeployment",
        obj(
            cond("Ready", "True", "Available"),
            cond("Progressing", "False", "RolloutFailed", "m2 timed out; serving m1"),
        ),
        "Degraded",
    ),
    (
        ROLLOUT + "bluegreen/progressing_addingMoreReplicas.yaml",
        "Progressing",
        "ModelDeployment",
        obj(
            cond("Ready", "True", "RollingOut", "0 of 3 updated"),
            cond("Progressing", "True", "RollingOut", "0 of 3 updated"),
        ),
        "Progressing",
    ),
    (
        ROLLOUT + "bluegreen/progressing_waitingUntilAvailable.yaml",
        "Progressing",
        "ModelDeployment",
        obj(
            cond("Ready", "True", "RollingOut", "1 of 3 available"),
            cond("Progressing", "True", "RollingOut", "1 of 3 available"),
        ),
        "Progressing",
    ),
    (
        ROLLOUT + "canary/progressing_killingOldReplicas.yaml",
        "Progressing",
        "ModelDeployment",
        obj(
            cond("Ready", "True", "RollingOut", "1 old pending"),
            cond("Progressing", "True", "RollingOut", "1 old pending"),
        ),
        "Progressing",
    ),
    (
        ROLLOUT + "bluegreen/healthy_servingActiveService.yaml",
        "Healthy",
        "ModelDeployment",
        obj(*SERVING),
        "Healthy",
    ),
    (
        ROLLOUT + "canary/healthy_executedAllSteps.yaml",
        "Healthy",
        "ModelDeployment",
        obj(*SERVING),
        "Healthy",
    ),
    (
        ROLLOUT + "healthy_legacy_v0.9_observedGeneration.yaml",
        "Healthy",
        "ModelDeployment",
        obj(*SERVING, observed=None),
        "Healthy",
    ),
    (
        TEKTON + "running.yaml",
        "Progressing",
        "PipelineRun",
        obj(cond("Succeeded", "Unknown", "Running")),
        "Progressing",
    ),
    (
        TEKTON + "succeeded.yaml",
        "Healthy",
        "PipelineRun",
        obj(cond("Succeeded", "True", "Succeeded")),
        "Healthy",
    ),
    (
        TEKTON + "failed.yaml",
        "Degraded",
        "PipelineRun",
        obj(cond("Succeeded", "False", "StageFailed")),
        "Degraded",
    ),
    # differences, each explained in DIFFERENCES
    (
        "Tekton, reason Cancelled (PR 28467's rule)",
        "Degraded",
        "PipelineRun",
        obj(cond("Succeeded", "False", "Cancelled")),
        "Suspended",
    ),
    (
        ROLLOUT + "suspended_userPause.yaml (paused for a human)",
        "Suspended",
        "PipelineRun",
        obj(cond("Succeeded", "True", "Succeeded"), cond("AwaitingApproval", "True", "AwaitingApproval")),
        "Suspended",
    ),
    (
        "Tekton, Unknown with a new generation (PR 28467 reads no generation)",
        "Progressing",
        "PipelineRun",
        obj(cond("Succeeded", "Unknown", "Running"), generation=2),
        "Progressing",
    ),
    (
        "gitops-engine: deletionTimestamp set",
        "Progressing",
        "ModelDeployment",
        {**obj(*SERVING), "metadata": DELETING},
        "Progressing",
    ),
    (
        "gitops-engine: deletionTimestamp set",
        "Progressing",
        "PipelineRun",
        {**obj(cond("Succeeded", "True", "S")), "metadata": DELETING},
        "Progressing",
    ),
]

DIFFERENCES = {
    "Tekton, reason Cancelled (PR 28467's rule)": "a run a user cancelled did not fail: Suspended "
    "keeps an Application that holds it from turning Degraded; TimedOut stays Degraded",
}


@pytest.mark.parametrize(
    ("sample", "theirs", "kind", "body", "ours"), COMPARED, ids=[f"{c[2]}:{c[0]}" for c in COMPARED]
)
def test_same_situations_as_argo_cd_samples(
    sample: str, theirs: str, kind: str, body: dict[str, Any], ours: str
) -> None:
    assert health(kind, body)[0] == ours
    assert ours == theirs or sample in DIFFERENCES, f"{sample}: differs from Argo CD without a reason"


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
