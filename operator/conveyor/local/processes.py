"""Starting a stage's process (one per attempt of `launcher.ProcessLauncher`): forked from a
warm fork server, or exec'd like a pod would."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from conveyor.contract import INVOCATION_ENV, TERMINATION_LOG_ENV
from conveyor.engine.invocation import StageInvocation


class Process(Protocol):
    def poll(self) -> int | None: ...
    def kill(self) -> None: ...


@dataclass
class StageFiles:
    log: Path
    termination: Path


class _Forked:
    def __init__(self, proc: Any) -> None:
        self.proc = proc

    def poll(self) -> int | None:
        code: int | None = self.proc.exitcode
        return code

    def kill(self) -> None:
        if self.proc.exitcode is None:
            self.proc.kill()
        self.proc.join(5)


class _Popen:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


class ProcessStarter:
    """`fork` (default): stages are forked from a server that imported pandas and
    scikit-learn once; `exec`: every stage is a fresh `python -m conveyor stage`, exactly
    what a Job's container runs. Both hand the stage the same invocation."""

    def __init__(self, mode: str = "fork") -> None:
        if mode not in ("fork", "exec"):
            raise ValueError("launch mode is fork or exec")
        self.mode = mode if sys.platform != "win32" else "exec"
        self._ctx: Any = None

    def _context(self) -> Any:
        if self._ctx is None:
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload(["conveyor.stages.preload"])
        return self._ctx

    def start_builtin(self, inv: StageInvocation, files: StageFiles) -> Process:
        if self.mode == "fork":
            from conveyor.stages.runner import child_main

            proc = self._context().Process(
                target=child_main,
                args=(inv.to_json(), str(files.log), str(files.termination), dict(os.environ)),
                name=f"conveyor-stage-{inv.stage}",
                daemon=True,
            )
            proc.start()
            return _Forked(proc)
        return self._popen([sys.executable, "-m", "conveyor", "stage"], inv, files, {})

    def start_custom(
        self,
        argv: list[str],
        inv: StageInvocation,
        files: StageFiles,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> Process:
        """A custom stage's command, run in `cwd` (the pipeline's folder: relative paths in a
        pipeline are relative to its file) with this process's environment and `env`."""
        return self._popen(argv, inv, files, env, cwd)

    def _popen(
        self,
        argv: list[str],
        inv: StageInvocation,
        files: StageFiles,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> Process:
        environ = {
            **os.environ,
            **env,
            INVOCATION_ENV: inv.to_json(),
            TERMINATION_LOG_ENV: str(files.termination),
        }
        with files.log.open("wb") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd,
            )
        return _Popen(proc)
