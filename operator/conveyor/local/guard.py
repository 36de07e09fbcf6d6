"""What outlives `conveyor run` to clean up after it: a small process (`python -m
conveyor.local.guard`, in a process group of its own, deaf to Ctrl-C and SIGTERM) that reads
from a pipe only `conveyor run` writes to. Through it `conveyor run` says which process groups
its stages lead, the run's record so far, and at the end that the run was recorded. When the
pipe closes, however `conveyor run` ended (SIGKILL included: the kernel closes the pipe), the
guard kills the groups still listed; if the run was not recorded, it records it as Interrupted,
so that `conveyor runs` says what happened and `--resume-from` can reuse what was done.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

    from conveyor.artifacts.layout import RunRecord

# The guard's own process imports no more than the lines above (its start-up is CPU taken from
# the run on a busy machine): what it needs only at the end is imported there.
GUARD_MAIN = "from conveyor.local.guard import main; raise SystemExit(main())"

INTERRUPTED = "Interrupted"
UNFINISHED = ("Pending", "Running")
DONE = "done"


class Guard:
    """`conveyor run`'s end of the pipe (a no-op where the guard cannot start)."""

    def __init__(self) -> None:
        self.stdin: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        if sys.platform == "win32":
            return
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-c", GUARD_MAIN],  # not -m: runpy costs as much as the rest
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            process_group=0,
        )
        self.stdin = self.proc.stdin

    def _send(self, line: str) -> None:
        if self.stdin is None:
            return
        try:
            self.stdin.write(line.encode() + b"\n")
            self.stdin.flush()
        except OSError:  # the guard is gone (killed): nothing else to do
            self.stdin = None

    def add(self, pid: int | None) -> None:
        """A stage started, leader of process group `pid`."""
        if pid is not None:
            self._send(f"+{pid}")

    def discard(self, pid: int | None) -> None:
        """A stage ended: its group is not to be killed any more."""
        if pid is not None:
            self._send(f"-{pid}")

    def record(self, store: str, record: RunRecord) -> None:
        """What to record, as Interrupted, should `conveyor run` die now."""
        import json
        import socket

        data = record.model_dump(mode="json", by_alias=True)
        self._send(
            json.dumps({"store": store, "record": data, "pid": os.getpid(), "host": socket.gethostname()})
        )

    def close(self, recorded: bool) -> None:
        """The end of the run: the guard kills what is left of the stages and, unless the run
        was `recorded`, records it as Interrupted."""
        import contextlib
        import subprocess

        if recorded:
            self._send(DONE)
        if self.stdin is not None:
            with contextlib.suppress(OSError):
                self.stdin.close()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.stdin = None


def interrupted(last: dict[str, Any]) -> None:
    """Record the run `last` describes as Interrupted, unless its record says it finished."""
    from datetime import UTC, datetime

    from conveyor.artifacts.layout import RunRecord, read_run_record, write_run_record
    from conveyor.artifacts.store import open_store

    record = RunRecord.model_validate(last["record"])
    store = open_store(last["store"])
    current = read_run_record(store, record.namespace, record.pipeline, record.run)
    if current is not None and current.phase not in UNFINISHED:
        return
    now = datetime.now(UTC)
    why = "stopped with conveyor run"
    stages = [
        s
        if s.phase not in UNFINISHED
        else s.model_copy(update={"phase": "Cancelled", "finish_time": now, "message": why})
        for s in record.stages
    ]
    message = (
        f"conveyor run (pid {last['pid']} on {last['host']}) ended before the run did (killed, or "
        f"its machine stopped); its stages were stopped. `conveyor run --resume-from {record.run}` "
        "reuses the stages it finished"
    )
    update = {"phase": INTERRUPTED, "message": message, "completion_time": now, "stages": stages}
    write_run_record(store, record.model_copy(update=update))


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    last: dict[str, Any] | None = None
    done = False
    for raw in sys.stdin.buffer:  # until conveyor run closes the pipe, or dies
        if not raw.endswith(b"\n"):
            break  # cut short by conveyor run's death
        line = raw.decode().strip()
        if line.startswith(("+", "-")):
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
        elif line.startswith("{"):
            import json

            last = json.loads(line)
        elif line == DONE:
            done = True
    import contextlib  # from here on, `conveyor run` is over: start-up cost no longer matters

    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    if last is not None and not done:
        try:
            interrupted(last)
        except Exception as err:  # a store gone meanwhile, say: one line where the run printed
            print(f"conveyor: could not record the run as interrupted: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
