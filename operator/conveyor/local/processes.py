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
from conveyor.local.forkserver import ForkServer, ForkServerGone
from conveyor.stages.preload import needs

if TYPE_CHECKING:  # this module is imported before pydantic and asyncio are (`start_early`)
    import asyncio

    from conveyor.engine.invocation import StageInvocation


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
    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid = server, pid

    def poll(self) -> int | None:
        return self.server.exit_code(self.pid)

    def kill(self) -> None:
        if self.server.exit_code(self.pid) is None:
            kill_group(self.pid)
        self.server.wait(self.pid, 5)


class _NotStarted:
    """A stage the fork server could not start (it ended): failed, its termination message why."""

    pid = None

    def __init__(self, files: StageFiles, why: str) -> None:
        files.termination.write_text(why)

    def poll(self) -> int | None:
        return 1

    def kill(self) -> None:
        pass


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
        self.server: ForkServer | None = None

    def _server(self) -> ForkServer:
        """The fork server, started if need be: from this (the main) thread, which it dies with,
        and with SIGINT blocked, which it then ignores (`conveyor.stages.preload`)."""
        if self.server is None:
            with sigint_blocked():
                self.server = ForkServer()
        return self.server

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

    def is_warm(self, inv: StageInvocation) -> bool:
        """Whether a built-in stage starts now: exec'd, or its imports done in the server."""
        return self.mode != "fork" or (self.server is not None and self.server.is_ready(needs(inv)))

    async def warm_up(self, inv: StageInvocation, stopping: asyncio.Event) -> bool:
        """Wait until the fork server has imported what `uses` needs (pandas for the first
        stages, scikit-learn for the next: seconds) without blocking the event loop; False when
        `stopping` is set first. An ended server is left to `start_builtin` to report."""
        if self.is_warm(inv):
            return True
        uses = needs(inv)
        import asyncio

        server, loop = self._server(), asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wait() -> None:  # in a daemon thread: a stopped run does not wait for the imports
            with contextlib.suppress(ForkServerGone):
                server.wait_ready(uses)
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
        return ready.done()

    def start_builtin(self, inv: StageInvocation, files: StageFiles) -> Process:
        if self.mode == "fork" and inv.uses is not None:
            args = [inv.to_json(), str(files.log), str(files.termination), dict(os.environ)]
            server = self._server()
            try:
                return _Forked(server, server.fork(needs(inv), args))
            except ForkServerGone as err:
                return _NotStarted(files, str(err))
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
