"""`make demo`'s install step says what it installs and shows pip's progress (it was `pip -q`:
minutes of silence on a fresh machine)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import REPO


def test_the_first_install_is_not_silent(tmp_path: Path) -> None:
    venv = tmp_path / "venv"  # never created: -n prints the recipe, -B as if nothing were installed
    proc = subprocess.run(
        ["make", "-n", "-B", "demo", f"VENV={venv}"], cwd=REPO, capture_output=True, text=True, check=True
    )
    lines = proc.stdout.splitlines()
    install = next(line for line in lines if "pip install" in line and "-e" in line)
    assert " -q" not in install and "--progress-bar on" in install
    announce = lines.index(next(line for line in lines if line.startswith("echo") and "installing" in line))
    assert announce < lines.index(install)
    assert "several minutes" in lines[announce]
