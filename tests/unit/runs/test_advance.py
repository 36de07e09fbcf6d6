"""The run core both executors share, over a launcher that only records what it was asked: the
settle loop, what a look at the store finds and writes, cancel, resume and the run record."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor.api.pipeline import PipelineSpec, Stage
from conveyor.api.pipelinerun import PipelineRunStatus, StagePhase, StageStatus
from conveyor.artifacts import layout
from conveyor.artifacts.layout import StageResult
from conveyor.artifacts.store import LocalStore
from conveyor.engine.invocation import StageInvocation
from conveyor.runs.advance import RunInputs, Step, advance
from conveyor.runs.context import RunContext
from conveyor.runs.observe import NO_OUTPUTS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


class Launcher:
    """A launcher whose stages do what the test says; it records launches and stops."""

    def __init__(self, blocked: frozenset[str] = frozenset()) -> None:
        self.states: dict[str, StageStatus] = {}
        self.launched: list[str] = []
        self.stopped: list[str] = []
        self.blocked = blocked

    async def observe(self) -> dict[str, StageStatus]:
        return dict(self.states)

    async def launch(self, stage: Stage, inv: StageInvocation, now: datetime) -> StageStatus:
        self.launched.append(stage.name)
        if stage.name in self.blocked:
            return StageStatus(name=stage.name, phase=StagePhase.PENDING, message="name taken")
        st = StageStatus(
            name=stage.name, phase=StagePhase.RUNNING, attempts=1, start_time=now, cache_key=inv.cache_key
        )
        self.states[stage.name] = st
        return st

    async def stop(self, stage: str) -> None:
        self.stopped.append(stage)
        self.states.pop(stage, None)

    def exit0(self, name: str) -> None:
        self.states[name] = self.states[name].model_copy(update={"phase": "Succeeded", "finish_time": T1})


def spec(*stages: dict[str, Any]) -> PipelineSpec:
    return PipelineSpec.model_validate({"stages": list(stages)})


A: dict[str, Any] = {"name": "a", "image": "x", "command": ["true"]}
B: dict[str, Any] = {"name": "b", "image": "x", "command": ["true"], "dependsOn": ["a"]}


def context(tmp_path: Path, pipeline: PipelineSpec, run: str = "r1") -> RunContext:
    return RunContext(pipeline, "p", "ns", run, LocalStore(tmp_path / "store"), version="v1")


def step(ctx: RunContext, launcher: Launcher, previous: PipelineRunStatus, **inputs: object) -> Step:
    return asyncio.run(advance(ctx, launcher, previous, RunInputs(**inputs), clock=lambda: T0))  # type: ignore[arg-type]


def commit(ctx: RunContext, name: str, result: StageResult, run: str | None = None) -> None:
    layout.commit_result(ctx.store, ctx.prefix(name, run), result)


def test_a_cache_hit_starts_the_next_stage_in_the_same_step(tmp_path: Path) -> None:
    ctx = context(tmp_path, spec(A, B))
    first = Launcher()
    s = step(ctx, first, PipelineRunStatus())
    first.exit0("a")
    s = step(ctx, first, s.status)  # a's result (an empty one: a custom stage) is recorded in the cache
    assert [w.phase for w in s.status.stages] == ["Succeeded", "Running"]
    again = Launcher()
    s = step(context(tmp_path, spec(A, B), run="r2"), again, PipelineRunStatus())
    assert again.launched == ["b"]  # a from the cache, b started in the same step
    a = s.status.stages[0]
    assert a.cache_hit and a.message == "cache hit" and a.attempts == 0


def test_a_stage_that_exits_0_without_outputs(tmp_path: Path) -> None:
    options = {"source": "sklearn://iris", "target": "target"}
    builtin: dict[str, Any] = {"name": "a", "uses": "ingest", "with": options}
    for stage, phase, message in [(builtin, "Failed", NO_OUTPUTS), (A, "Succeeded", "")]:
        ctx = context(tmp_path / str(stage.get("uses")), spec(stage))
        launcher = Launcher()
        s = step(ctx, launcher, PipelineRunStatus())
        launcher.exit0("a")
        s = step(ctx, launcher, s.status)
        assert (s.status.stages[0].phase, s.status.stages[0].message) == (phase, message)
        committed = layout.read_result(ctx.store, ctx.prefix("a"))
        assert (committed is not None) == (phase == "Succeeded")  # a custom stage: none, committed


def test_a_stage_seen_done_is_recorded_once(tmp_path: Path) -> None:
    ctx = context(tmp_path, spec(A, B))
    launcher = Launcher()
    s = step(ctx, launcher, PipelineRunStatus())
    launcher.exit0("a")
    s = step(ctx, launcher, s.status)
    assert s.stage_seconds == {"a": 60.0}
    s = step(ctx, launcher, s.status)
    assert s.stage_seconds == {}  # already recorded: no second observation, no second cache write


def test_a_launch_that_cannot_start_is_not_retried_in_the_same_step(tmp_path: Path) -> None:
    ctx = context(tmp_path, spec(A))
    launcher = Launcher(blocked=frozenset({"a"}))
    s = step(ctx, launcher, PipelineRunStatus())
    assert launcher.launched == ["a"]
    assert s.status.stages[0].phase == "Pending" and s.status.stages[0].message == "name taken"


def test_cancel_stops_running_stages_and_writes_the_record(tmp_path: Path) -> None:
    ctx = context(tmp_path, spec(A, B))
    launcher = Launcher()
    s = step(ctx, launcher, PipelineRunStatus())
    s = step(ctx, launcher, s.status, cancelled=True)
    assert launcher.stopped == ["a"]
    assert s.status.phase == "Cancelled" and [x.phase for x in s.status.stages] == ["Cancelled"] * 2
    assert s.record is not None and s.record.phase == "Cancelled"
    assert s.status.run_record is not None and s.status.run_record.endswith("/ns/p/r1/run.json")


def test_resume_reuses_an_earlier_runs_results(tmp_path: Path) -> None:
    ctx = context(tmp_path, spec(A, B), run="r2")
    commit(ctx, "a", StageResult(metrics={"rows": 3.0}), run="r1")
    launcher = Launcher()
    s = step(ctx, launcher, PipelineRunStatus(), resume_from="r1")
    assert launcher.launched == ["b"]
    a = s.status.stages[0]
    assert a.phase == "Succeeded" and a.message == "reused from run r1" and a.metrics == {"rows": 3.0}
    pointer = layout.read_result(ctx.store, ctx.prefix("a"))
    assert pointer is not None and pointer.reused_from == "run:r1"


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_metrics_that_are_not_numbers_are_left_out_and_said(tmp_path: Path, bad: float) -> None:
    ctx = context(tmp_path, spec(A))
    commit(ctx, "a", StageResult(metrics={"good": 1.0, "bad": bad}))
    launcher = Launcher()
    launcher.states["a"] = StageStatus(name="a", phase="Succeeded", attempts=1, start_time=T0, finish_time=T1)
    s = step(ctx, launcher, PipelineRunStatus(stages=[StageStatus(name="a", phase="Running")]))
    a = s.status.stages[0]
    assert a.metrics == {"good": 1.0} and "bad" in a.message
    assert s.status.phase == "Succeeded" and s.record is not None
