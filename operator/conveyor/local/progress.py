"""The live view of a local run while it goes (its stages, their times ticking, what it does
before they run), and the summary after it.

Everything a stage, a user or a model wrote (messages, names, URIs, decisions) is escaped before
Rich sees it: an error text holding `[/x]` is printed as written, never read as markup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from conveyor.api.pipelinerun import StagePhase, StageStatus
from conveyor.artifacts.layout import RunRecord
from conveyor.local.memo import start_line

if TYPE_CHECKING:
    from conveyor.local.executor import LocalRun

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


class RunView:
    """What a terminal shows while a run goes: rebuilt at each refresh, so a running stage's
    time ticks and so does the time of what the run is doing before its stages run (the cache
    look-ups, the fork server's imports)."""

    def __init__(self, run: str, store: str, stages: list[str]) -> None:
        self.title = f"run {run} · store {store}"
        self.stages = [StageStatus(name=name, phase=StagePhase.PENDING) for name in stages]
        self.activity, self.since = "", time.monotonic()

    def update(self, stages: list[StageStatus]) -> None:
        self.stages = stages

    def doing(self, activity: str) -> None:
        if activity != self.activity:
            self.activity, self.since = activity, time.monotonic()

    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = [Text(self.title), stage_table(self.stages, "")]
        if self.activity:
            elapsed = time.monotonic() - self.since
            parts.append(Text(f"{self.activity} ({elapsed:.1f}s)", style="dim"))
        return Group(*parts)


@contextmanager
def watch(local: LocalRun, console: Console, show: bool = True) -> Iterator[None]:
    """Show the run while it goes: the live view on a terminal; elsewhere (a log, CI) one line
    for each thing it does before its stages run. Nothing when `show` is false (the output is
    for a program)."""
    if not show:
        yield
        return
    if not console.is_terminal:
        console.print(start_line(local.run, local.store.root), markup=False, highlight=False, soft_wrap=True)

        def say(activity: str) -> None:
            if activity:
                console.print(activity, markup=False, highlight=False, soft_wrap=True)

        local.on_progress = say
        yield
        return
    view = RunView(local.run, local.store.root, [s.name for s in local.spec.stages])
    local.on_change = lambda plan: view.update(plan.status.stages)
    local.on_progress = view.doing
    with Live(view, console=console, refresh_per_second=8, transient=True):
        yield
