"""The run summary prints what stages and users wrote as written, never as Rich markup; local run
names do not repeat."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from conveyor.api.pipelinerun import StageStatus
from conveyor.artifacts.layout import RunRecord
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


def test_run_names_do_not_repeat_within_a_second_and_fit_a_label() -> None:
    names = {new_run_name("p" * 60) for _ in range(20_000)}
    assert len(names) == 20_000
    assert max(len(n) for n in names) <= 63
