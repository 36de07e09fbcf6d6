"""The fork server (`stages/preload.py`, driven by `local/forkserver.py`): its phases come ready
in order and a stage is forked at its own; its stages die with it; a stage asked of a server
that ended fails with why. (Ctrl-C and `conveyor run` dying: tests/integration/local.)"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.artifacts.store import LocalStore
from conveyor.contract import S3_ENDPOINT_ENV
from conveyor.engine.invocation import StageInvocation
from conveyor.local.forkserver import KILLED, ForkServer
from conveyor.local.processes import ProcessStarter, StageFiles
from conveyor.stages.preload import ALL, PHASES

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl, fork")


def invocation(tmp_path: Path, uses: str, options: dict[str, Any], inputs: Any = None) -> StageInvocation:
    store = LocalStore(tmp_path / "store")
    return StageInvocation(
        namespace="ns",
        pipeline="p",
        run="r",
        stage=uses,
        uses=uses,
        options=options,
        inputs=inputs or {},
        store=store.root,
        output_prefix=store.uri(f"ns/p/r/{uses}"),
    )


def files(tmp_path: Path, name: str) -> StageFiles:
    return StageFiles(log=tmp_path / f"{name}.log", termination=tmp_path / f"{name}.termination")


def child_args(inv: StageInvocation, f: StageFiles, env: dict[str, str] | None = None) -> list[Any]:
    return [inv.to_json(), str(f.log), str(f.termination), env or dict(os.environ)]


def gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def server() -> Any:
    started = ForkServer()
    yield started
    started.process.kill()
    started.process.wait(30)


def test_phases_come_ready_in_order_and_a_stage_forks_at_its_own(server: ForkServer, tmp_path: Path) -> None:
    assert server.wait_ready("ingest", 120)
    assert ALL not in server.ready  # ingest is ready seconds before scikit-learn is imported
    inv = invocation(tmp_path, "ingest", {"source": "sklearn://iris"})
    pid = server.fork("ingest", child_args(inv, files(tmp_path, "ingest")))
    assert server.wait(pid, 120) == 0, (tmp_path / "ingest.log").read_text()
    assert (tmp_path / "store/ns/p/r/ingest/outputs.json").is_file()
    assert server.wait_ready(ALL, 300)
    in_order = [kind for kinds, _ in PHASES for kind in kinds]
    assert list(server.ready) == [*in_order, ALL]


def test_stages_die_with_the_server(server: ForkServer, tmp_path: Path) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    env = {
        **os.environ,
        S3_ENDPOINT_ENV: f"http://127.0.0.1:{silent.getsockname()[1]}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    inv = invocation(tmp_path, "ingest", {"source": "s3://bucket/data.csv"})
    f = files(tmp_path, "ingest")
    assert server.wait_ready("ingest", 120)
    pid = server.fork("ingest", child_args(inv, f, env))
    time.sleep(1)
    assert server.exit_code(pid) is None, f.log.read_text()  # waiting for S3's answer
    server.process.send_signal(signal.SIGKILL)
    assert server.wait(pid, 30) == KILLED
    assert gone(pid, 30), f"stage {pid} outlived its fork server"
    silent.close()


def test_a_stage_asked_of_a_server_that_ended_fails_with_why(tmp_path: Path) -> None:
    starter = ProcessStarter("fork")
    started = starter._server()
    started.process.kill()
    started.process.wait(30)
    f = files(tmp_path, "ingest")
    proc = starter.start_builtin(invocation(tmp_path, "ingest", {"source": "sklearn://iris"}), f)
    assert proc.poll() == 1
    assert f.termination.read_text() == "the fork server ended (exit code -9) before it could start the stage"
