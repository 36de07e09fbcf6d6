"""Starting a stage's process (one per attempt of `launcher.ProcessLauncher`): forked from a
warm fork server, or exec'd like a pod would.

Every stage is the leader of its own process group: stopping it (a timeout, a cancelled run)
kills the group, so what the stage started dies with it, and the terminal's Ctrl-C, sent to the
foreground group, reaches `conveyor run` alone, which stops the stages itself. A stage forked
from the server also dies with the server (`die_with_parent`), and the server with `conveyor
run`; `guard.Guard` kills the groups when `conveyor run` ends any other way (SIGKILL).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.contract import INVOCATION_ENV, TERMINATION_LOG_ENV

if TYPE_CHECKING:  # this module is imported before pydantic and asyncio are (`start_early`)
    import asyncio

    from conveyor.engine.invocation import StageInvocation

PRELOAD = "conveyor.stages.preload"


class Process(Protocol):
    def poll(self) -> int | None: ...
    def kill(self) -> None: ...


@dataclass
class StageFiles:
    log: Path
    termination: Path


def kill_group(pid: int) -> None:
    """SIGKILL a running stage and its process group (the stage itself alone if it has not
    made its group yet)."""
    for send in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            send(pid, signal.SIGKILL)


class _Forked:
    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self.pid: int = proc.pid

    def poll(self) -> int | None:
        code: int | None = self.proc.exitcode
        return code

    def kill(self) -> None:
        if self.proc.exitcode is None:
            kill_group(self.pid)
        self.proc.join(5)


class _Popen:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.pid)
        self.proc.wait(5)


def stage_child(invocation_json: str, log_path: str, termlog_path: str, env: dict[str, str]) -> None:
    """A forked stage: its own process group, dead with the fork server, then the stage."""
    os.setpgid(0, 0)
    from conveyor.stages import preload  # already imported: this process is the server's fork

    preload.die_with_parent(preload.SERVER_PID)
    from conveyor.stages.runner import child_main

    child_main(invocation_json, log_path, termlog_path, env)


def _ready() -> None:
    """What the warm-up forks: nothing (the fork server answers once its imports are done)."""


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """SIGINT held back from this thread (and so from what it starts) meanwhile; one that came
    is delivered after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class ProcessStarter:
    """`fork` (default): stages are forked from a server that imported pandas and
    scikit-learn once; `exec`: every stage is a fresh `python -m conveyor stage`, exactly
    what a Job's container runs. Both hand the stage the same invocation."""

    def __init__(self, mode: str = "fork") -> None:
        if mode not in ("fork", "exec"):
            raise ValueError("launch mode is fork or exec")
        self.mode = mode if sys.platform != "win32" else "exec"
        self._ctx: Any = None
        self.warm = self.mode != "fork"

    def _context(self) -> Any:
        if self._ctx is None:
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload([PRELOAD])
        return self._ctx

    def _server(self) -> Any:
        """The fork server, started if need be: from this (the main) thread, which it dies with,
        and with SIGINT blocked, which it then ignores (`conveyor.stages.preload`)."""
        ctx = self._context()
        from multiprocessing import forkserver, resource_tracker

        resource_tracker.ensure_running()  # first: starting it unblocks SIGINT afterwards
        with sigint_blocked():
            forkserver.ensure_running()
        return ctx

    def start_early(self, pipeline_file: Path) -> None:
        """Start the fork server now, before `conveyor run` imports and validates anything: its
        seconds of imports (pandas, scikit-learn) then overlap the CLI's own work. Only when
        the file may name a built-in stage (`uses`); a run whose stages all come from the cache
        should not call this. A file it cannot read is left to the validation to report."""
        if self.mode != "fork":
            return
        try:
            if b"uses" not in pipeline_file.read_bytes():
                return
        except OSError:
            return
        self._server()

    async def warm_up(self, stopping: asyncio.Event) -> bool:
        """Wait until the fork server can fork (it imports pandas and scikit-learn first, for
        seconds) without blocking the event loop; False when `stopping` is set first."""
        if self.warm:
            return True
        import asyncio

        ctx, loop = self._server(), asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wait() -> None:  # in a daemon thread: a stopped run does not wait for the imports
            with contextlib.suppress(Exception):
                proc = ctx.Process(target=_ready, daemon=True)
                proc.start()
                proc.join()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(done)

        def done() -> None:
            if not ready.done():
                ready.set_result(None)

        threading.Thread(target=wait, name="conveyor-fork-server-warm-up", daemon=True).start()
        stop = asyncio.ensure_future(stopping.wait())
        either: set[asyncio.Future[Any]] = {ready, stop}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        self.warm = ready.done()
        return self.warm

    def start_builtin(self, inv: StageInvocation, files: StageFiles) -> Process:
        if self.mode == "fork":
            proc = self._server().Process(
                target=stage_child,
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
                process_group=0,  # its own group, in this session (`ps -s` finds it)
                cwd=cwd,
            )
        return _Popen(proc)
