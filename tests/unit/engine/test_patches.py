"""Status patches never carry NaN or infinity: a real API server rejects such JSON."""

from __future__ import annotations

import json
import math

from conveyor.api.modeldeployment import ModelDeploymentStatus
from conveyor.api.pipelinerun import PipelineRunStatus, StageStatus
from conveyor.engine.patches import finite_metrics, status_patch


def test_a_non_finite_score_is_removed_from_the_status() -> None:
    patch = status_patch({"lastDriftScore": 0.1}, ModelDeploymentStatus(last_drift_score=math.nan))
    assert patch["status"]["lastDriftScore"] is None  # merge patch: null removes it
    json.dumps(patch, allow_nan=False)


def test_non_finite_metrics_are_left_out_of_a_patch() -> None:
    stage = StageStatus(name="s", phase="Succeeded", metrics={"auc": math.nan, "n": 3.0})
    status = PipelineRunStatus(stages=[stage], metrics={"auc": math.inf, "n": 3.0})
    patch = status_patch(None, status)
    assert patch["status"]["stages"][0]["metrics"] == {"n": 3.0}
    assert patch["status"]["metrics"] == {"n": 3.0}
    json.dumps(patch, allow_nan=False)


def test_finite_metrics_says_what_it_left_out() -> None:
    kept, note = finite_metrics({"a": 1.0, "b": math.nan, "c": -math.inf})
    assert kept == {"a": 1.0}
    assert note == "not finite, left out: b (nan), c (-inf)"
    assert finite_metrics({"a": 1.0}) == ({"a": 1.0}, "")
