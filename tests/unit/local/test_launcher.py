"""The local launcher behaves like a stage's Job: retries up to `retries`, ends an attempt at
`timeoutSeconds`, says why an attempt failed. Over processes whose exit the test decides."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor.api.pipeline import PipelineSpec
from conveyor.artifacts.store import LocalStore
from conveyor.engine.invocation import StageInvocation
from conveyor.local.launcher import ProcessLauncher, failure_message
from conveyor.local.processes import StageFiles
from conveyor.runs.context import RunContext

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Proc:
    def __init__(self, code: int | None) -> None:
        self.code = code
        self.killed = False

    def poll(self) -> int | None:
        return self.code

    def kill(self) -> None:
        self.killed = True


class Starter:
    """Starts the processes the test lined up, one per attempt, and writes each attempt's
    termination message the way a stage would."""

    def __init__(self, *attempts: tuple[int | None, str]) -> None:
        self.attempts = list(attempts)
        self.started: list[Proc] = []

    def start_custom(
        self, argv: list[str], inv: StageInvocation, files: StageFiles, env: dict[str, str], cwd: Any = None
    ) -> Proc:
        code, message = self.attempts.pop(0)
        if message:
            files.termination.write_text(message)
        self.started.append(Proc(code))
        return self.started[-1]

    start_builtin: Any = None


def launcher(tmp_path: Path, starter: Starter, **stage: Any) -> tuple[ProcessLauncher, RunContext]:
    spec = PipelineSpec.model_validate(
        {"stages": [{"name": "s", "image": "x", "command": ["true"], **stage}]}
    )
    ctx = RunContext(spec, "p", "ns", "r", LocalStore(tmp_path / "store"), version="v")
    return ProcessLauncher(starter, ctx, tmp_path), ctx  # type: ignore[arg-type]


def run(launcher: ProcessLauncher, ctx: RunContext, polls: int) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        stage = ctx.spec.stage("s")
        await launcher.launch(stage, ctx.invocation(stage, {}), T0)
        seen = {}
        for _ in range(polls):
            seen = await launcher.observe()
        return {k: v.model_dump() for k, v in seen.items()}

    return asyncio.run(go())


CASES = [
    ("exit 0 on the first attempt", {}, [(0, "")], "Succeeded", 1, ""),
    ("a failure, then success on the retry", {"retries": 1}, [(3, "transient"), (0, "")], "Succeeded", 2, ""),
    (
        "out of attempts: the last one's message",
        {"retries": 1},
        [(3, "first"), (4, "second")],
        "Failed",
        2,
        "second",
    ),
    ("no retries: failed at once", {}, [(1, "bad data")], "Failed", 1, "bad data"),
    ("still running", {}, [(None, "")], "Running", 1, ""),
]


@pytest.mark.parametrize(
    ("stage", "attempts", "phase", "count", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_attempts(
    tmp_path: Path,
    stage: dict[str, Any],
    attempts: list[tuple[int | None, str]],
    phase: str,
    count: int,
    message: str,
) -> None:
    processes, ctx = launcher(tmp_path, Starter(*attempts), **stage)
    seen = run(processes, ctx, polls=len(attempts) + 1)
    assert (seen["s"]["phase"], seen["s"]["attempts"], seen["s"]["message"]) == (phase, count, message)
    assert (seen["s"]["finish_time"] is not None) == (phase != "Running")


def test_an_attempt_past_its_timeout_is_killed_and_counts_as_failed(tmp_path: Path) -> None:
    starter = Starter((None, ""), (None, ""))
    processes, ctx = launcher(tmp_path, starter, timeoutSeconds=1, retries=1)
    run(processes, ctx, polls=0)  # launched, not looked at yet
    processes.running["s"].started -= 2  # started two seconds ago
    asyncio.run(processes.observe())  # past its timeout: killed, and retried
    assert starter.started[0].killed and len(starter.started) == 2
    processes.running["s"].started -= 2
    final = asyncio.run(processes.observe())["s"]
    assert starter.started[1].killed
    assert (final.phase, final.attempts, final.message) == ("Failed", 2, "timed out after 1s")


def test_stop_kills_the_attempt_and_forgets_it(tmp_path: Path) -> None:
    starter = Starter((None, ""))
    processes, ctx = launcher(tmp_path, starter)
    run(processes, ctx, polls=1)
    asyncio.run(processes.stop("s"))
    assert starter.started[0].killed and asyncio.run(processes.observe()) == {}


@pytest.mark.parametrize(
    ("termination", "log", "code", "expected"),
    [
        ("the stage's own reason", "", 1, "the stage's own reason"),
        ("", "", -9, "killed by signal 9"),
        ("", "a\nb\nc\nd\ne\nf\n", 2, "exited with code 2: b | c | d | e | f"),
        ("", "", 2, "exited with code 2"),
    ],
    ids=["termination message", "signal", "log tail", "nothing to say"],
)
def test_failure_message(tmp_path: Path, termination: str, log: str, code: int, expected: str) -> None:
    files = StageFiles(log=tmp_path / "log", termination=tmp_path / "term")
    if termination:
        files.termination.write_text(termination)
    if log:
        files.log.write_text(log)
    assert failure_message(files, code) == expected
