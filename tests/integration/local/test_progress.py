"""What `conveyor run` shows while it goes: on a terminal, what it does before the first stage
runs (the cache look-ups, the fork server's imports) with its time, and each running stage's
time ticking; elsewhere, one line per such step."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PIPELINE = REPO / "bench" / "five-stage.yaml"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(*args: str, home: Path) -> str:
    """`conveyor run` with a pseudo-terminal as its stdout and stderr: what the terminal got."""
    leader, follower = pty.openpty()
    env = {**os.environ, "HOME": str(home), "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "run", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(300) == 0
    return ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def waiting_pipeline(tmp_path: Path) -> Path:
    """ingest, then a custom stage that runs for 1.5 s: long enough for many refreshes (8 a
    second) on any machine, so its ticking time is seen however fast the built-ins are."""
    stages = [
        {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
        {
            "name": "wait",
            "image": "wait:1",
            "command": [sys.executable, "-c", "import time; time.sleep(1.5)"],
            "dependsOn": ["ingest"],
        },
    ]
    doc = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "wait"}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**doc, "spec": {"stages": stages}}))
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pseudo-terminal")
def test_a_terminal_sees_the_start_up_and_running_times_tick(tmp_path: Path) -> None:
    pipeline = waiting_pipeline(tmp_path)
    shown = on_a_terminal(str(pipeline), "--store", str(tmp_path / "store"), home=tmp_path)
    first_running = shown.index("Running")
    before = shown[:first_running]
    assert f"store file://{tmp_path / 'store'}" in " ".join(before.split())  # as wrapped
    assert "warming up the fork server" in before  # not a table of Pending stages alone
    warm_up = [float(t) for t in re.findall(r"fork server.*?\((\d+\.\d)s\)", before, re.S)]
    assert len(set(warm_up)) > 1  # its time goes on
    # A Running stage shows its time going on (it was drawn once per status change: 0.0s)
    times = {float(t) for t in re.findall(r"wait\s*│\s*Running\s*│\s*(\d+\.\d)s", shown)}
    assert len(times) > 1, times


def test_a_log_gets_one_line_per_start_up_step(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", str(PIPELINE), "--store", str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert re.fullmatch(rf"run bench-five-\S+: store file://{re.escape(str(tmp_path))}/store", lines[0])
    assert lines[1:] == [
        "looking up the cache for 5 stage(s)",
        "warming up the fork server (it imports pandas and scikit-learn once) for ingest",
    ]
