"""`conveyor run`'s end of the fork server (`conveyor.stages.preload`): start it, know which
stages it is ready to fork, ask it for a stage, and learn when that stage ends.

The server is this process's child; the stages are the server's. A reader thread takes the
server's messages (phases ready, pids forked, exit codes) so that `poll` never blocks. Standard
library only: it is imported before `conveyor run` imports anything else (`start_early`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from conveyor.stages.preload import ALL

KILLED = -9  # the exit code of a stage whose server died (it died with it, by SIGKILL)


class ForkServerGone(RuntimeError):
    """The fork server ended: no stage can be forked any more."""


class ForkServer:
    def __init__(self) -> None:
        self.ready: dict[str, None] = {}  # the stages it can fork warm, in the order they came
        self.pids: dict[int, int] = {}  # request id -> pid
        self.codes: dict[int, int] = {}  # pid -> exit code
        self.gone = False
        self.changed = threading.Condition()
        self._next = 0
        mine, theirs = socket.socketpair()
        script = (
            "import json, sys; sys.path[:] = json.loads(sys.argv[3]); "
            "from conveyor.stages.preload import main; main(int(sys.argv[1]), int(sys.argv[2]))"
        )
        # The interpreter's flags carry over (-X importtime shows the server's imports too).
        flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
        argv = [sys.executable, *flags, "-c", script, str(theirs.fileno()), str(os.getpid())]
        self.process = subprocess.Popen(
            [*argv, json.dumps(sys.path)],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # `-o json` is on ours; its errors go to our stderr
        )
        theirs.close()
        self.sock = mine
        threading.Thread(target=self._read, name="conveyor-fork-server", daemon=True).start()

    def _read(self) -> None:
        with self.sock.makefile("rb") as lines:
            for line in lines:
                message: dict[str, Any] = json.loads(line)
                with self.changed:
                    if "ready" in message:
                        self.ready.update(dict.fromkeys(message["ready"]))
                    elif "id" in message:
                        self.pids[message["id"]] = message["pid"]
                    else:
                        self.codes[message["pid"]] = message["code"]
                    self.changed.notify_all()
        with self.changed:
            self.gone = True
            self.changed.notify_all()

    def is_ready(self, kind: str) -> bool:
        return kind in self.ready or ALL in self.ready

    def wait_ready(self, kind: str, timeout: float | None = None) -> bool:
        """Whether the server can fork `kind` warm (waits up to `timeout`); raises if it ended."""
        with self.changed:
            self.changed.wait_for(lambda: self.is_ready(kind) or self.gone, timeout)
            if self.gone and not self.is_ready(kind):
                raise ForkServerGone(self.why())
            return self.is_ready(kind)

    def why(self) -> str:
        code = self.process.poll()
        return f"the fork server ended (exit code {code}) before it could start the stage"

    def fork(self, kind: str, args: list[Any]) -> int:
        """Fork a stage (`runner.child_main(*args)`) and return its pid. When the server is
        ready for `kind`, it answers between two of its imports: well within a second."""
        with self.changed:
            self._next += 1
            ident = self._next
        try:
            self.sock.sendall(json.dumps({"id": ident, "kind": kind, "args": args}).encode() + b"\n")
        except OSError:
            raise ForkServerGone(self.why()) from None
        with self.changed:
            self.changed.wait_for(lambda: ident in self.pids or self.gone)
            if ident not in self.pids:
                raise ForkServerGone(self.why())
            return self.pids.pop(ident)

    def exit_code(self, pid: int) -> int | None:
        """The stage's exit code, None while it runs (a stage of a dead server died with it)."""
        with self.changed:
            if pid in self.codes:
                return self.codes[pid]
            return KILLED if self.gone else None

    def wait(self, pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self.changed:
            left = max(0.0, deadline - time.monotonic())
            self.changed.wait_for(lambda: pid in self.codes or self.gone, left)
        return self.exit_code(pid)
