"""The run summary prints what stages and users wrote as written, never as Rich markup; local run
names do not repeat."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from conveyor.api.pipelinerun import StageStatus
from conveyor.artifacts.layout import RunRecord
from conveyor.artifacts.store import LocalStore
from conveyor.local import executor
from conveyor.local.executor import new_run_name
from conveyor.local.progress import print_summary

TRICKY = "KeyError: '[/x]' in [bold]column[/bold] [red"


def test_markup_in_a_failed_stage_is_printed_as_written() -> None:
    now = datetime.now(UTC)
    stage = StageStatus(name="train", phase="Failed", message=TRICKY, start_time=now, finish_time=now)
    record = RunRecord.model_validate(
        {
            "run": "r-1",
            "pipeline": "p",
            "namespace": "default",
            "phase": "Failed",
            "message": f"stage train failed: {TRICKY}",
            "startTime": now,
            "specDigest": "0" * 64,
            "params": {},
            "version": "test",
            "stages": [stage.model_dump(by_alias=True)],
        }
    )
    console = Console(record=True, width=200, color_system=None)
    print_summary(console, record)  # a MarkupError before
    out = console.export_text()
    assert f"stage train failed:\n{TRICKY}" in out
    assert out.count("column[/bold]") == 2  # the table's note and the failure once (the run repeated it)


def test_run_names_fit_a_label() -> None:
    assert max(len(new_run_name("p" * 60)) for _ in range(100)) <= 63


def test_a_run_name_already_taken_in_the_store_is_drawn_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random names repeat by chance (a 20,000-name CI run drew one twice): a run claims its
    name in the store, and a name another run holds is never reused."""
    store = LocalStore(tmp_path)
    draws = iter(["p-20261130-171021-001e4033", "p-20261130-171021-001e4033", "p-other"])
    monkeypatch.setattr(executor, "new_run_name", lambda pipeline: next(draws))
    assert executor.claim_name(store, "default", "p") == "p-20261130-171021-001e4033"
    assert executor.claim_name(store, "default", "p") == "p-other"


def test_the_live_view_shows_a_running_stage_and_the_start_up_with_their_times_going_on() -> None:
    """The view is rebuilt at each refresh of the terminal: before, the table was built once
    per status change, so a running stage's time stayed at 0.0s."""
    from rich.console import Console

    from conveyor.local.progress import RunView

    def render() -> str:
        console = Console(record=True, width=120, color_system=None)
        console.print(view)
        return console.export_text()

    def seconds(pattern: str, text: str) -> float:
        found = re.search(pattern, text)
        assert found is not None, text
        return float(found.group(1))

    view = RunView("p-1", "file:///s", ["a", "b"])
    view.doing("warming up the fork server")
    first = render()
    assert "run p-1 · store file:///s" in first and re.search(r"a\s+│ Pending", first)
    started = datetime.now(UTC) - timedelta(seconds=3)
    view.update([StageStatus(name="a", phase="Running", start_time=started)])
    time.sleep(0.2)
    later = render()
    assert seconds(r"fork server \((\d+\.\d)s\)", later) > seconds(r"fork server \((\d+\.\d)s\)", first)
    assert seconds(r"a\s+│ Running\s+│ (\d+\.\d)s", later) >= 3.0
    view.doing("")
    time.sleep(0.2)
    last = render()
    assert "fork server" not in last
    assert seconds(r"a\s+│ Running\s+│ (\d+\.\d)s", last) > seconds(r"a\s+│ Running\s+│ (\d+\.\d)s", later)
