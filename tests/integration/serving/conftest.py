"""A model trained once per session by the real pipeline, for the serving tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    store = tmp_path_factory.mktemp("serving") / "store"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "run",
            str(EXAMPLES / "breast-cancer" / "pipeline.yaml"),
            "--store",
            str(store),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(proc.stdout)
    return {"store": str(store), "model": record["model"]["uri"], "run": record["run"]}


@pytest.fixture(scope="session")
def features() -> object:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame.drop(columns="target")


def model_path(trained: dict[str, str]) -> Path:
    return Path(trained["model"].removeprefix("file://"))
