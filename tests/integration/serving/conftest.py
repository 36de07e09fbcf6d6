"""A model trained once per session by the real pipeline, for the serving tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    store = tmp_path_factory.mktemp("serving") / "store"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "run",
            str(EXAMPLES / "breast-cancer" / "pipeline.yaml"),
            "--store",
            str(store),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(proc.stdout)
    return {"store": str(store), "model": record["model"]["uri"], "run": record["run"]}


@pytest.fixture(scope="session")
def features() -> object:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame.drop(columns="target")


def model_path(trained: dict[str, str]) -> Path:
    return Path(trained["model"].removeprefix("file://"))


def wait_ready(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until a model server answers its readiness probe (or has exited)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
            return
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "the server exited"
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)


def start_serve(*args: str) -> subprocess.Popen[str]:
    """`conveyor serve ARGS` on a free port of 127.0.0.1 (returned as `proc.port`), ready."""
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "serve", *args, "--host", "127.0.0.1", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.port = port  # type: ignore[attr-defined]
    try:
        wait_ready(port, proc)
    except BaseException:
        proc.kill()
        raise
    return proc


SERVER_ID = re.compile(r"[0-9a-f]{16}-[0-9a-f]+")  # an id the server made: its prefix, a counter


class Client:
    """An HTTP client of an `InferenceServer` serving in this event loop on 127.0.0.1 (aiohttp's
    client session; paths are relative to the server)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    async def __aenter__(self) -> Client:
        import aiohttp

        self._running = self.server.running()
        self.session = aiohttp.ClientSession(base_url=await self._running.__aenter__())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        await self._running.__aexit__(*exc)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.session.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.session.post(path, **kwargs)
