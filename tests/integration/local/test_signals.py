"""`conveyor run` takes its stages down with it, however it ends: SIGTERM and Ctrl-C cancel the
run (recorded Cancelled, exit 128 + the signal: 143 and 130, no traceback), SIGKILL leaves the
guard to stop the stages and record the run Interrupted; no stage process (nor anything a
stage started) survives, checked with `ps` over the session `conveyor run` leads; and the next
run of the store works, reusing only what was finished."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups, /proc")


def pipeline(tmp_path: Path) -> Path:
    """Two stages that outlive the test's patience: a forked built-in (train, a big forest) and
    an exec'd custom stage that starts a process of its own (a shell with a `sleep` child) and
    waits for a file; both start at once."""
    flag = tmp_path / "go"
    waiter = (
        f"sleep 600 & echo $$ $! > {tmp_path / 'waiter'}; while [ ! -e {flag} ]; do sleep 0.1; done; "
        'echo "{\\"done\\": 1}" > "$(dirname "$CONVEYOR_TERMINATION_LOG")/waiter.out"'
    )
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "slow"},
        "spec": {
            "params": [{"name": "trees", "default": "4000"}],
            "stages": [
                {"name": "waiter", "image": "busybox", "command": ["sh", "-c", waiter]},
                {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://breast_cancer"}},
                {"name": "transform", "uses": "transform", "dependsOn": ["ingest"]},
                {
                    "name": "train",
                    "uses": "train",
                    "dependsOn": ["transform"],
                    "with": {
                        "estimator": "sklearn.ensemble.RandomForestClassifier",
                        "params": {"n_estimators": "$(params.trees)"},
                    },
                },
            ],
        },
    }
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """`conveyor run` as a shell starts a job: the leader of its own session and process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "run", *args, "--store", str(tmp_path / "store"), "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=REPO,
        env={**os.environ, "HOME": str(tmp_path)},
    )


def alive(session: int, also: list[int] = []) -> list[tuple[int, int, str]]:  # noqa: B006
    """(pid, process group, command) of every process of the session, and of `also`, still
    alive (zombies are dead: only their parent has not read their exit status yet)."""
    out = subprocess.run(
        ["ps", "-e", "-o", "pid=,pgid=,sid=,stat=,args="], capture_output=True, text=True
    ).stdout
    rows = [line.split(None, 4) for line in out.splitlines() if line.strip()]
    return [
        (int(r[0]), int(r[1]), r[4] if len(r) > 4 else "")
        for r in rows
        if (int(r[2]) == session or int(r[0]) in also) and not r[3].startswith("Z")
    ]


def wait_for(what: str, check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {seconds}s")


def busy_stages(proc: subprocess.Popen[str], tmp_path: Path) -> list[int]:
    """Wait until train runs (its log is there) and the waiter's shell has started its child;
    the waiter's shell and child."""

    def busy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"conveyor run ended first: {proc.communicate()}")
        waiter = tmp_path / "waiter"
        return waiter.is_file() and any((tmp_path / ".cache" / "conveyor" / "logs").glob("*/train.1.log"))

    wait_for("train running and the waiter's child", busy, 240)
    time.sleep(0.2)  # the waiter's pids are written whole
    return [int(pid) for pid in (tmp_path / "waiter").read_text().split()]


@contextlib.contextmanager
def session(proc: subprocess.Popen[str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Whatever the test's outcome, nothing of the session (nor the waiter) outlives it."""
    try:
        yield proc
    finally:
        waiter = tmp_path / "waiter"
        pids = [int(p) for p in waiter.read_text().split()] if waiter.is_file() else []
        for pid, _, _ in alive(proc.pid, pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=10)


def runs(tmp_path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "conveyor", "runs", "--store", str(tmp_path / "store"), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    found: list[dict[str, Any]] = json.loads(out)
    return found


@pytest.mark.slow
def test_sigkill_leaves_no_stage_behind_and_the_run_shows_interrupted(tmp_path: Path) -> None:
    with session(start(tmp_path, str(pipeline(tmp_path))), tmp_path) as proc:
        waiter = busy_stages(proc, tmp_path)
        proc.kill()
        proc.wait(30)
        left = wait_for_nothing_left(proc.pid, waiter)
    assert not left, f"still running after conveyor run was killed: {left}"
    [run] = runs(tmp_path)
    assert run["phase"] == "Interrupted", run
    assert "--resume-from" in run["message"]
    phases = {s["name"]: s["phase"] for s in run["stages"]}
    assert phases["waiter"] == phases["train"] == "Cancelled"
    assert phases["ingest"] == phases["transform"] == "Succeeded"

    # the store is fine for the next run: the finished stages come from the cache, the killed
    # one runs again (its half-done outputs are nobody's), and it all ends well
    (tmp_path / "go").touch()
    with session(start(tmp_path, str(pipeline(tmp_path)), "-p", "trees=3"), tmp_path) as again:
        out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    record = json.loads(out)
    hits = {s["name"]: s.get("cacheHit", False) for s in record["stages"]}
    assert hits == {"waiter": False, "ingest": True, "transform": True, "train": False}


def wait_for_nothing_left(session: int, also: list[int]) -> list[tuple[int, int, str]]:
    """What of the session (and `also`) is still alive once the guard had time to act (30 s)."""
    deadline = time.monotonic() + 30
    while (left := alive(session, also)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.slow
def test_sigterm_cancels_the_run_and_stops_every_stage(tmp_path: Path) -> None:
    with session(start(tmp_path, str(pipeline(tmp_path))), tmp_path) as proc:
        waiter = busy_stages(proc, tmp_path)
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        left = wait_for_nothing_left(proc.pid, waiter)
    assert proc.returncode == 128 + signal.SIGTERM, err  # 143, as a shell reports it
    assert "Traceback" not in err
    record = json.loads(out)
    assert record["phase"] == "Cancelled"
    phases = {s["name"]: s["phase"] for s in record["stages"]}
    assert phases["waiter"] == phases["train"] == "Cancelled"
    assert not left, f"still running after conveyor run was stopped: {left}"
    assert [r["phase"] for r in runs(tmp_path)] == ["Cancelled"]
