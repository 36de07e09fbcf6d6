"""The local executor's launcher: a stage is a process (forked or exec'd by `processes.ProcessStarter`).

It behaves like a stage's Job: a failed attempt is retried up to the stage's `retries`, and an
attempt that outlives the stage's `timeoutSeconds` is killed and counts as failed. Each attempt
writes its log and termination message under `workdir`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from conveyor.api.pipeline import Stage
from conveyor.api.pipelinerun import StagePhase, StageStatus
from conveyor.engine.invocation import StageInvocation
from conveyor.engine.params import substitute
from conveyor.local.guard import Guard
from conveyor.local.processes import Process, ProcessStarter, StageFiles
from conveyor.runs.context import RunContext


@dataclass
class _Attempt:
    stage: Stage
    inv: StageInvocation
    process: Process
    files: StageFiles
    started: float  # monotonic
    status: StageStatus


class ProcessLauncher:
    def __init__(
        self,
        starter: ProcessStarter,
        ctx: RunContext,
        workdir: Path,
        guard: Guard | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.starter, self.ctx, self.workdir = starter, ctx, workdir
        self.guard, self.stopping = guard, stopping or asyncio.Event()
        self.running: dict[str, _Attempt] = {}
        self.ended: dict[str, StageStatus] = {}  # exited 0, or failed with no attempt left
        self.on_progress: Callable[[str], None] = lambda activity: None

    def any_ended(self) -> bool:
        """Whether an attempt exited or outlived its timeout since the last `observe` (cheap:
        the executor waits on this between steps instead of stepping every few milliseconds)."""
        now = time.monotonic()
        for attempt in self.running.values():
            limit = attempt.stage.timeout_seconds
            if attempt.process.poll() is not None or (limit is not None and now - attempt.started > limit):
                return True
        return False

    async def observe(self) -> dict[str, StageStatus]:
        for name, attempt in list(self.running.items()):
            self._poll(name, attempt)
        return {**self.ended, **{n: a.status for n, a in self.running.items()}}

    async def launch(self, stage: Stage, inv: StageInvocation, now: datetime) -> StageStatus:
        if stage.uses is not None and not await self._warm(stage.name, inv):
            return StageStatus(
                name=stage.name, phase=StagePhase.PENDING, message="not started: the run stops"
            )
        now = max(now, datetime.now(UTC))  # after a warm-up, the stage starts now
        st = StageStatus(name=stage.name, phase=StagePhase.RUNNING, start_time=now, cache_key=inv.cache_key)
        return self._attempt(stage, inv, st).status

    async def _warm(self, stage: str, inv: StageInvocation) -> bool:
        """The fork server ready to fork the stage warm (False: the run was asked to stop)."""
        if self.starter.is_warm(inv):
            return True
        self.on_progress(f"warming up the fork server (it imports pandas and scikit-learn once) for {stage}")
        return await self.starter.warm_up(inv, self.stopping)

    async def stop(self, stage: str) -> None:
        attempt = self.running.pop(stage, None)
        if attempt is not None:
            self._kill(attempt)

    def stop_all(self) -> None:
        for attempt in self.running.values():
            self._kill(attempt)
        self.running.clear()

    def _kill(self, attempt: _Attempt) -> None:
        attempt.process.kill()
        if self.guard is not None:
            self.guard.discard(getattr(attempt.process, "pid", None))

    def _attempt(self, stage: Stage, inv: StageInvocation, st: StageStatus) -> _Attempt:
        n = st.attempts + 1
        files = StageFiles(
            log=self.workdir / f"{stage.name}.{n}.log",
            termination=self.workdir / f"{stage.name}.{n}.termination",
        )
        files.termination.unlink(missing_ok=True)
        if stage.uses is not None:
            process = self.starter.start_builtin(inv, files)
        else:
            resolved = self.ctx.resolved
            argv = substitute([*(stage.command or []), *(stage.args or [])], resolved)
            env = {e.name: substitute(e.value, resolved) for e in stage.env}
            process = self.starter.start_custom(argv, inv, files, env, self.ctx.base_dir)
        if self.guard is not None:
            self.guard.add(getattr(process, "pid", None))
        st = st.model_copy(update={"phase": StagePhase.RUNNING, "attempts": n})
        attempt = self.running[stage.name] = _Attempt(stage, inv, process, files, time.monotonic(), st)
        return attempt

    def _poll(self, name: str, attempt: _Attempt) -> None:
        code = attempt.process.poll()
        limit = attempt.stage.timeout_seconds
        if code is None and limit is not None and time.monotonic() - attempt.started > limit:
            self._kill(attempt)
            return self._failed(name, attempt, f"timed out after {limit}s")
        if code is None:
            return None
        del self.running[name]
        if self.guard is not None:
            self.guard.discard(getattr(attempt.process, "pid", None))
        if code != 0:
            return self._failed(name, attempt, failure_message(attempt.files, code))
        now = datetime.now(UTC)
        self.ended[name] = attempt.status.model_copy(
            update={"phase": StagePhase.SUCCEEDED, "finish_time": now, "message": ""}
        )
        return None

    def _failed(self, name: str, attempt: _Attempt, message: str) -> None:
        self.running.pop(name, None)
        st = attempt.status.model_copy(update={"message": message})
        if st.attempts <= attempt.stage.retries:
            self._attempt(attempt.stage, attempt.inv, st)  # the next attempt, like a Job's new pod
            return
        now = datetime.now(UTC)
        self.ended[name] = st.model_copy(update={"phase": StagePhase.FAILED, "finish_time": now})


def failure_message(files: StageFiles, code: int) -> str:
    """Why an attempt failed: its termination message, else the signal or exit code and the
    log's last lines."""
    if files.termination.is_file():
        text = files.termination.read_text().strip()
        if text:
            return text
    if code < 0:
        return f"killed by signal {-code}"
    log = files.log.read_text(errors="replace").strip() if files.log.is_file() else ""
    tail = log.splitlines()[-5:]
    return f"exited with code {code}" + (": " + " | ".join(tail) if tail else "")
