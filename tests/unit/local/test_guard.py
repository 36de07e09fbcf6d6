"""The guard: when `conveyor run`'s end of its pipe closes, the stage groups it was told of die,
and a run not recorded as finished is recorded Interrupted (a finished one is left alone)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.api.pipelinerun import StageStatus
from conveyor.artifacts.layout import RunRecord, read_run_record, write_run_record
from conveyor.artifacts.store import LocalStore
from conveyor.local.guard import Guard

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups")
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def running(store: LocalStore) -> RunRecord:
    record = RunRecord(
        namespace="default",
        pipeline="p",
        run="p-1",
        phase="Running",
        spec_digest="0" * 64,
        params={},
        version="test",
        start_time=NOW,
        stages=[
            StageStatus(name="a", phase="Succeeded", start_time=NOW, finish_time=NOW),
            StageStatus(name="b", phase="Running", start_time=NOW),
        ],
    )
    write_run_record(store, record)
    return record


def stage_group() -> subprocess.Popen[bytes]:
    """A stand-in stage: a shell leading its own group, with a child of its own."""
    return subprocess.Popen(["sh", "-c", "sleep 300 & wait"], process_group=0)


def test_a_run_that_ends_unrecorded_is_interrupted_and_its_stages_killed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    stage = stage_group()
    guard = Guard()
    guard.add(stage.pid)
    guard.record(store.root, running(store))
    guard.close(recorded=False)  # as the kernel closes the pipe of a killed conveyor run
    assert stage.wait(10) == -9
    record = read_run_record(store, "default", "p", "p-1")
    assert record is not None and record.phase == "Interrupted"
    assert "--resume-from p-1" in record.message and record.completion_time is not None
    assert [(s.name, s.phase) for s in record.stages] == [("a", "Succeeded"), ("b", "Cancelled")]


def test_a_recorded_run_is_left_as_recorded(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ended = stage_group()
    guard = Guard()
    guard.add(ended.pid)
    guard.record(store.root, running(store))
    ended.kill()
    ended.wait()
    guard.discard(ended.pid)  # ended: its number may be anyone's now
    write_run_record(store, running(store).model_copy(update={"phase": "Succeeded"}))
    guard.close(recorded=False)  # conveyor run died between writing its record and saying so
    record = read_run_record(store, "default", "p", "p-1")
    assert record is not None and record.phase == "Succeeded"


def test_a_guard_that_died_first_is_no_error(tmp_path: Path) -> None:
    guard = Guard()
    assert guard.proc is not None
    guard.proc.kill()
    guard.proc.wait()
    guard.add(12345)  # the pipe is broken: nothing to tell any more
    guard.close(recorded=True)
