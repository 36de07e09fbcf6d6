"""The live table of stages while a local run goes, and the summary after it.

Everything a stage, a user or a model wrote (messages, names, URIs, decisions) is escaped before
Rich sees it: an error text holding `[/x]` is printed as written, never read as markup."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from conveyor.api.pipelinerun import StageStatus
from conveyor.artifacts.layout import RunRecord

STYLE = {
    "Succeeded": "green",
    "Failed": "red",
    "Running": "yellow",
    "Skipped": "dim",
    "Cancelled": "magenta",
    "Pending": "dim",
}


def _duration(st: StageStatus) -> str:
    if st.start_time is None:
        return ""
    end = st.finish_time or datetime.now(UTC)
    return f"{(end - st.start_time).total_seconds():.1f}s"


def stage_table(stages: list[StageStatus], title: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("stage", "phase", "time", "note"):
        table.add_column(col)
    for st in stages:
        note = "cache hit" if st.cache_hit else st.message.splitlines()[0] if st.message else ""
        if st.attempts > 1:
            note = f"attempt {st.attempts}; {note}"
        phase = f"[{STYLE[st.phase]}]{st.phase}[/]" if st.phase in STYLE else escape(st.phase)
        table.add_row(escape(st.name), phase, _duration(st), escape(note[:80]))
    return table


def print_summary(console: Console, record: RunRecord) -> None:
    console.print(stage_table(record.stages, escape(f"run {record.run}: {record.phase}")))
    total = ((record.completion_time or datetime.now(UTC)) - record.start_time).total_seconds()
    hits = sum(1 for s in record.stages if s.cache_hit)
    console.print(f"took {total:.2f}s; {hits}/{len(record.stages)} stages from cache")
    if record.phase != "Succeeded":
        failed = [st for st in record.stages if st.phase == "Failed"]
        for st in failed:  # each failure once: the run's message repeats the first one
            console.print(f"[red]stage {escape(st.name)} failed:[/]\n{escape(st.message)}")
        if not failed:  # cancelled, timed out, refused: only the run says why
            console.print(f"[red]{escape(record.message)}[/]")
    if record.model is not None:
        m = record.model
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(m.metrics.items()))
        verdict = "[green]promoted[/]" if m.promoted else "[yellow]not promoted[/]"
        console.print(
            f"model: {escape(m.uri)}\n  sha256 {m.sha256}\n  {escape(metrics)}\n"
            f"  gate: {escape(m.decision)} -> {verdict}"
        )
        onnx = any("onnx" in outputs for outputs in record.artifacts.values())
        console.print(f"  served by: {'onnx (onnxruntime; parity held)' if onnx else 'skops (scikit-learn)'}")
