"""Stage pods get the operator's default resources (the chart's stageResources, through
CONVEYOR_STAGE_RESOURCES) unless their stage sets its own, which replace them whole."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conveyor.api.pipeline import Stage
from conveyor.kube.manifests import stage_container
from conveyor.kube.settings import Settings
from tests.conftest import EXAMPLES
from tests.unit.kube.test_manifests import INV

DEFAULT = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def settings(resources: object | None) -> Settings:
    env = {} if resources is None else {"CONVEYOR_STAGE_RESOURCES": json.dumps(resources)}
    return Settings.from_env(env)


@pytest.mark.parametrize(
    ("default", "own", "expected"),
    [
        (DEFAULT, None, DEFAULT),
        (DEFAULT, {"limits": {"memory": "8Gi"}}, {"limits": {"memory": "8Gi"}}),
        (None, None, None),
        (None, {"requests": {"cpu": 2}}, {"requests": {"cpu": 2}}),
    ],
)
def test_stage_resources(default: object, own: object, expected: object) -> None:
    stage = Stage.model_validate({"name": "train", "uses": "train", **({"resources": own} if own else {})})
    container = stage_container(stage, INV, None, settings(default))
    assert container.get("resources") == expected


@pytest.mark.parametrize(
    ("raw", "says"), [("{bad", "not JSON"), ('{"request": {}}', "CONVEYOR_STAGE_RESOURCES")]
)
def test_a_bad_default_names_the_variable(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match="CONVEYOR_STAGE_RESOURCES") as err:
        Settings.from_env({"CONVEYOR_STAGE_RESOURCES": raw})
    assert says in str(err.value)


def test_conveyor_render_applies_the_default() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "render", "-f", str(EXAMPLES / "breast-cancer" / "pipeline.yaml")],
        capture_output=True,
        text=True,
        check=True,
        env={"CONVEYOR_STORE": "s3://mlops/cv", "CONVEYOR_STAGE_RESOURCES": json.dumps(DEFAULT), "PATH": ""},
    )
    jobs = list(yaml.safe_load_all(proc.stdout))
    assert jobs and all(j["spec"]["template"]["spec"]["containers"][0]["resources"] == DEFAULT for j in jobs)
