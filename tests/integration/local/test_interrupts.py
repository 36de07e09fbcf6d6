"""Ctrl-C at any moment of `conveyor run` ends it with 130 and no traceback, neither its own
nor a child's: while Python imports the CLI, and while the fork server imports pandas and
scikit-learn for the first stages. A terminal's Ctrl-C goes to the whole foreground process
group, so the test sends SIGINT to the group `conveyor run` leads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.local.test_signals import alive, wait_for_nothing_left

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups")
PIPELINE = REPO / "bench" / "five-stage.yaml"


def run_args(tmp_path: Path) -> list[str]:
    return ["--store", str(tmp_path / "store"), "-o", "json"]


def imported(module: str) -> Callable[[list[str]], bool]:
    """Whether `-X importtime` reported `module` (or one of its submodules) imported."""
    pattern = re.compile(rf"\|\s+{re.escape(module)}(\.|$)")
    return lambda lines: any(pattern.search(line.rstrip()) for line in lines)


def ctrl_c_when(tmp_path: Path, ready: Callable[[list[str]], bool]) -> tuple[int, str, str]:
    """Run `conveyor run` (printing each module it imports) and press Ctrl-C once `ready`
    holds for the stderr lines so far and the processes of its session."""
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "conveyor", "run", str(PIPELINE), *run_args(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.stderr is not None and proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not ready(list(lines)):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.stdout.read()
        proc.wait(60)
        reader.join(30)
        left = wait_for_nothing_left(proc.pid, [])
    finally:
        for pid, _, _ in alive(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after Ctrl-C: {left}"
    err = "".join(line for line in lines if not line.startswith("import time:"))
    return proc.returncode, out, err


def test_ctrl_c_while_the_cli_is_imported(tmp_path: Path) -> None:
    code, out, err = ctrl_c_when(tmp_path, imported("conveyor.errors"))
    assert code == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert out == ""  # no run had started
    assert not (tmp_path / "store").exists()


def test_ctrl_c_while_the_first_stages_start(tmp_path: Path) -> None:
    """The fork server is importing pandas and scikit-learn: Ctrl-C reaches it too (its
    process group is the terminal's), and before, its traceback was printed and `conveyor run`
    failed with `EOFError`."""
    code, out, err = ctrl_c_when(tmp_path, imported("sklearn"))  # only the fork server does
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "Error" not in err, err
    record = json.loads(out)
    assert record["phase"] == "Cancelled"
    assert {s["phase"] for s in record["stages"]} <= {"Cancelled", "Succeeded"}
