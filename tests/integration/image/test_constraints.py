"""constraints.txt pins every runtime dependency (pyproject.toml's, and theirs), offline."""

from __future__ import annotations

import runpy
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "image_constraints.py"


def test_every_runtime_dependency_is_pinned() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_unpinned_dependency_is_named() -> None:
    script = runpy.run_path(str(SCRIPT), run_name="image_constraints")
    pinned = (REPO / "constraints.txt").read_text()
    without = "".join(
        line + "\n" for line in pinned.splitlines() if not line.startswith(("boto3==", "six=="))
    )
    assert script["unpinned"](pinned) == []
    assert script["unpinned"](without) == ["boto3", "six"]  # a direct and an indirect dependency
