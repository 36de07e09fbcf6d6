"""Fixtures for running the real operator (Kopf, in-process) against the API emulator."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio

import conveyor.kube.handlers  # noqa: F401  (registers the operator's handlers)
from conveyor.kube.client import Connection, KubeClient
from conveyor.kube.controller import Controller
from conveyor.kube.settings import Settings
from tests.integration.kube.cluster import ApiServer, write_kubeconfig
from tests.integration.kube.kubelet import Kubelet
from tests.k8s import pod_spec_of, restricted_violations, validate_custom, validate_k8s

CALLS_FILE = Path(__file__).resolve().parents[2] / "operator-api-calls.json"
_ALL_CALLS: set[tuple[str, str]] = set()


@pytest.fixture(scope="session", autouse=True)
def record_api_calls() -> Iterator[None]:
    """Writes every (verb, resource) the operator sent during the suite, for the RBAC check."""
    yield
    if _ALL_CALLS:
        merged = set(map(tuple, json.loads(CALLS_FILE.read_text()))) if CALLS_FILE.exists() else set()
        CALLS_FILE.write_text(json.dumps(sorted(map(list, merged | _ALL_CALLS)), indent=1) + "\n")


@pytest_asyncio.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ApiServer]:
    async with ApiServer() as server, kmock.Server(server, host="127.0.0.1"):
        server.declare()
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", str(server.url))))
        yield server
        _ALL_CALLS.update(server.calls)
        check_stored_objects(server)


def check_stored_objects(server: ApiServer) -> None:
    """Every object in the emulator, whoever wrote it, is valid: Kubernetes kinds against the
    official schemas (strict), Conveyor kinds against their CRD; pods pass the restricted profile."""
    for resource in ("batch/v1/jobs", "v1/events", "apps/v1/deployments", "v1/services"):
        for obj in server.objects_of(resource):
            validate_k8s(obj)
            spec = pod_spec_of(obj)
            if spec is not None:
                assert restricted_violations(spec) == [], obj["metadata"]["name"]
    for plural in ("pipelines", "pipelineruns", "modeldeployments"):
        for obj in server.objects_of(f"conveyor.dev/v1alpha1/{plural}"):
            assert validate_custom(obj) == [], (obj["metadata"]["name"], obj.get("status"))


@pytest.fixture
def s3(bucket: str, s3_endpoint: str) -> dict[str, str]:
    return {"bucket": bucket, "endpoint": s3_endpoint}


async def create(api: ApiServer, obj: dict[str, Any]) -> None:
    """What `kubectl create` does: POST to the object's collection."""
    group_version = obj["apiVersion"]
    plural = {
        "Pipeline": "pipelines",
        "PipelineRun": "pipelineruns",
        "ModelDeployment": "modeldeployments",
        "Secret": "secrets",
    }[obj["kind"]]
    ns = obj["metadata"].get("namespace", "default")
    prefix = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    resp = await api.post(f"{prefix}/namespaces/{ns}/{plural}", json=obj)
    assert resp.status < 300, await resp.text()
    resp.release()


async def patch(api: ApiServer, plural: str, name: str, body: dict[str, Any]) -> None:
    resp = await api.patch(
        f"/apis/conveyor.dev/v1alpha1/namespaces/default/{plural}/{name}",
        json=body,
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert resp.status < 300, await resp.text()
    resp.release()


async def credentials_secret(api: ApiServer) -> None:
    data = {
        k: base64.b64encode(v.encode()).decode()
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items()
    }
    await create(
        api, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"}, "data": data}
    )


_EMULATOR = {"server": ""}


@kopf.on.login()
def _login_to_the_emulator(**_: Any) -> kopf.ConnectionInfo:
    """Kopf's default login reads $KUBECONFIG once per process; each test has its own emulator."""
    return kopf.ConnectionInfo(server=_EMULATOR["server"], insecure=True)


class OperatorProcess:
    """The real operator (Kopf + Conveyor's handlers) in a thread with its own event loop, as
    a separate process would be (stopping Kopf cancels every task of its loop); restartable."""

    def __init__(self, api: ApiServer, settings: Settings) -> None:
        self.api = api
        self.settings = settings
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    async def start(self) -> None:
        server = str(self.api.url).rstrip("/")
        _EMULATOR["server"] = server
        self.stop_flag = threading.Event()

        async def main() -> None:
            controller = Controller(self.settings, KubeClient(Connection(server=server)))
            await kopf.operator(
                standalone=True,
                namespaces=["default"],
                memo=kopf.Memo(controller=controller),
                stop_flag=self.stop_flag,
            )

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as err:  # surfaced by stop()
                self.errors.append(err)

        self.thread = threading.Thread(target=run, name="operator", daemon=True)
        self.thread.start()

    async def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 30)
        assert not self.thread.is_alive(), "the operator did not stop"
        self.thread = None
        assert not self.errors, self.errors


@pytest_asyncio.fixture
async def operator(api: ApiServer, s3: dict[str, str]) -> AsyncIterator[OperatorProcess]:
    settings = Settings(
        image="conveyor:test",
        resync_seconds=2.0,
        credentials_secret="s3-credentials",
        s3_endpoint=s3["endpoint"],
        namespaces=["default"],
        job_ttl_seconds=600,
    )
    await credentials_secret(api)
    proc = OperatorProcess(api, settings)
    await proc.start()
    yield proc
    await proc.stop()


@pytest_asyncio.fixture
async def kubelet(api: ApiServer) -> AsyncIterator[Kubelet]:
    # Pods get S3 credentials only from the Secret the operator names, not from this process.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    async with Kubelet(api, base_env=clean) as k:
        yield k


async def wait_for(predicate: Any, timeout: float = 60, what: str = "") -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
