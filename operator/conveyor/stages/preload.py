"""The local executor's fork server: one process that imports what the built-in stages use, in
phases, and forks each stage from itself, so a stage starts warm.

A stage is forked as soon as its phase is imported, not once everything is: ingest and validate
need pandas (an ingest of a bundled scikit-learn dataset also `sklearn.datasets`: rather than
import scikit-learn a second time beside the server, it waits for it), transform scikit-learn and
skops, train also skl2onnx and onnxruntime. The server
goes on importing the later phases while the first stages run, so their imports are off the
run's critical path. It checks for requests between one module's import and the next: a forked
stage never sees a half-imported module.

Protocol (`local.forkserver` is the other end), one JSON object per line on a socket:
- to the server: `{"id": n, "args": [...]}` (the arguments of `runner.child_main`);
- from it: `{"ready": [kinds]}` once a phase is imported (`"*"`: everything), `{"id": n, "pid": p}`
  when forked, `{"pid": p, "code": c}` when that child ended (c as `Popen.returncode`: minus the
  signal that killed it).

Before anything else, the server makes itself safe to leave running: it ignores Ctrl-C (the
user's Ctrl-C is for `conveyor run`, which stops the stages; `conveyor run` starts the server
with SIGINT blocked, so one pressed during its start-up stays pending until ignored here, never
a traceback) and it dies with `conveyor run`, however that ends (`die_with_parent`). Its
children inherit the ignored SIGINT, make their own process group, and die with the server.
Only the standard library is imported until the first phase.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import select
import signal
import socket
import sys
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ALL = "*"  # what the server says when every phase is imported
SKLEARN_INGEST = "ingest sklearn://"  # an ingest stage loading a bundled scikit-learn dataset

# (the stages a phase makes ready, the modules it imports in order), each phase after the last
PHASES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (
        ("ingest", "validate"),
        (
            *("numpy", "pandas", "pyarrow.parquet", "pydantic", "conveyor.stages.runner"),
            *("conveyor.stages.ingest", "conveyor.stages.validate"),
        ),
    ),
    ((SKLEARN_INGEST,), ("scipy.sparse", "scipy.special", "scipy.stats", "sklearn.base", "sklearn.datasets")),
    (
        ("transform",),
        (
            *("sklearn.utils._testing", "skops.io", "sklearn.compose", "sklearn.impute", "sklearn.pipeline"),
            *("sklearn.preprocessing", "sklearn.model_selection", "conveyor.stages.transform"),
        ),
    ),
    (
        ("train",),
        (
            *("sklearn.linear_model", "sklearn.ensemble", "sklearn.metrics", "conveyor.stages.train"),
            *("onnxruntime", "onnx", "skl2onnx"),
        ),
    ),
    (("evaluate", "predict"), ("conveyor.stages.evaluate", "conveyor.stages.predict")),
]


def needs(inv: Any) -> str:
    """The phase a built-in stage's invocation waits for: its own (in `PHASES`), but an
    ingest of a bundled scikit-learn dataset waits for scikit-learn rather than import it a
    second time beside the server, on the same cores."""
    source = inv.options.get("source")
    if inv.uses == "ingest" and isinstance(source, str) and source.startswith("sklearn://"):
        return SKLEARN_INGEST
    return str(inv.uses)


SERVER_PID = os.getpid()  # in the server and its forks: the parent every stage checks it has


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent ends (Linux; a no-op elsewhere). A
    parent already gone before the request (the process is not `parent`'s child any more) ends
    this one at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent is not None and os.getppid() != parent:
        os._exit(1)


class Server:
    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.buffer = conn, b""
        self.ready: set[str] = set()
        self.waiting: list[dict[str, Any]] = []  # requests for a stage whose phase is not imported
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)  # a child's SIGCHLD wakes `serve`
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def say(self, message: dict[str, Any]) -> None:
        self.conn.sendall(json.dumps(message).encode() + b"\n")

    def phase_done(self, kinds: tuple[str, ...]) -> None:
        self.ready.update(kinds)
        self.say({"ready": list(kinds)})
        waiting, self.waiting = self.waiting, []
        for request in waiting:
            self.handle(request)

    def serve(self, block: bool) -> bool:
        """Answer what has come (waiting for something when `block`); False once `conveyor run`
        closed its end."""
        conn = self.conn.fileno()
        readable, _, _ = select.select([conn, self.wake_r], [], [], None if block else 0)
        if self.wake_r in readable:
            os.read(self.wake_r, 4096)
        self.reap()
        if conn not in readable:
            return True
        data = self.conn.recv(1 << 20)
        if not data:
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.handle(json.loads(line))
        return True

    def handle(self, request: dict[str, Any]) -> None:
        if request["kind"] not in self.ready and ALL not in self.ready:
            self.waiting.append(request)
            return
        pid = os.fork()
        if pid == 0:
            self.child(request["args"])
        self.say({"id": request["id"], "pid": pid})

    def child(self, args: list[Any]) -> None:
        """In the forked stage: the server's plumbing closed, then the stage (it exits itself)."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.conn.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            os.setpgid(0, 0)
            die_with_parent(SERVER_PID)
            from conveyor.stages.runner import child_main

            child_main(*args)
        finally:
            os._exit(70)  # not reached: child_main exits with the stage's code

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.say({"pid": pid, "code": os.waitstatus_to_exitcode(status)})


def main(fd: int, parent: int) -> None:
    """The server's life: phases imported (serving between modules), then serving until
    `conveyor run` closes the socket; its running stages then die with it."""
    global SERVER_PID
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # discards a Ctrl-C pending since the start
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    die_with_parent(parent)
    SERVER_PID = os.getpid()
    server = Server(socket.socket(fileno=fd))
    try:
        for kinds, modules in PHASES:
            for name in modules:
                if not server.serve(block=False):
                    os._exit(0)
                with contextlib.suppress(ImportError):  # optional: the stage that needs it says so
                    importlib.import_module(name)
            server.phase_done(kinds)
        server.phase_done((ALL,))
        while server.serve(block=True):
            pass
    except (BrokenPipeError, ConnectionResetError):  # `conveyor run` is gone
        pass
    os._exit(0)
