"""Fixtures for the operator against a real control plane (see tests/cluster/).

One cluster per test session; each test gets its own namespace (restricted Pod Security
enforced, the S3 credentials Secret in it) and, where it asks, the real operator (Kopf and
Conveyor's handlers) in a thread, authenticated as the Helm chart's ServiceAccount. When a test
ends, its namespace is deleted with the operator still running, and the deletion must complete.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import pytest_asyncio

import conveyor.kube.handlers  # noqa: F401  (registers the operator's handlers)
from conveyor.kube.client import KubeClient
from conveyor.kube.controller import Controller
from conveyor.kube.credentials import Connection
from conveyor.kube.settings import Settings
from tests.cluster.api import Api, ApiError
from tests.cluster.cluster import CREDENTIALS_SECRET, Cluster
from tests.conftest import REPO

GROUP_PATH = "/apis/conveyor.dev/v1alpha1"
PATHS = {
    "Pipeline": "pipelines",
    "PipelineRun": "pipelineruns",
    "ModelDeployment": "modeldeployments",
}


@pytest.fixture(scope="session")
def cluster(s3_endpoint: str) -> Iterator[Cluster]:
    root = REPO / ".test-cluster" / f"session-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    c = Cluster(root, s3_endpoint)
    # CONVEYOR_TEST_AUDIT=all logs every request (to see which RBAC grants the operator uses)
    c.plane.audit_everything = os.environ.get("CONVEYOR_TEST_AUDIT") == "all"
    previous = os.environ.get("KUBECONFIG")
    try:
        c.up()
        os.environ["KUBECONFIG"] = str(c.operator_kubeconfig)  # what the operator logs in with
        yield c
    finally:
        c.down()
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
    # logs and state stay for a look with CONVEYOR_KEEP_CLUSTER=1
    if not os.environ.get("CONVEYOR_KEEP_CLUSTER"):
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture
async def kube(cluster: Cluster) -> AsyncIterator[Api]:
    """The tests' own admin client (not the operator's identity)."""
    api = Api.from_kubeconfig(cluster.admin_kubeconfig)
    yield api
    await api.close()


def path_of(kind_or_plural: str, namespace: str | None, name: str | None = None) -> str:
    plural = PATHS.get(kind_or_plural, kind_or_plural)
    core = {"pods", "secrets", "events", "services", "configmaps", "serviceaccounts"}
    apps = {"deployments", "replicasets"}
    if plural in core:
        base = "/api/v1"
    elif plural in apps:
        base = "/apis/apps/v1"
    elif plural == "jobs":
        base = "/apis/batch/v1"
    else:
        base = GROUP_PATH
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")


async def create(kube: Api, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """What `kubectl create` does, with strict server-side field validation."""
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    kind = obj["kind"]
    plural = PATHS.get(kind) or {"Secret": "secrets"}[kind]
    out: dict[str, Any] = await kube.call(
        "POST", path_of(plural, namespace), obj, params={"fieldValidation": "Strict"}
    )
    return out


async def get(kube: Api, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    out: dict[str, Any] | None = await kube.call("GET", path_of(plural, namespace, name), ok=(404,))
    return out


async def items(kube: Api, plural: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
    params = {"labelSelector": selector} if selector else None
    out = await kube.call("GET", path_of(plural, namespace), params=params)
    return list(out["items"])


async def merge_patch(kube: Api, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
    await kube.call(
        "PATCH", path_of(plural, namespace, name), body, content_type="application/merge-patch+json"
    )


async def delete(kube: Api, plural: str, namespace: str, name: str, propagation: str = "Background") -> None:
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
    await kube.call("DELETE", path_of(plural, namespace, name), body, ok=(404,))


async def wait_for(predicate: Any, timeout: float = 60, what: str = "", interval: float = 0.1) -> Any:
    """Poll a (sync or async) predicate until it returns something truthy."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


async def namespace_gone(kube: Api, namespace: str, timeout: float) -> None:
    async def gone() -> bool:
        return await kube.call("GET", f"/api/v1/namespaces/{namespace}", ok=(404,)) is None

    await wait_for(gone, timeout, f"namespace {namespace} to be deleted", interval=0.25)


@pytest_asyncio.fixture
async def ns(kube: Api, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace enforcing the restricted Pod Security profile, with the credentials
    Secret stage pods are given. Deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    labels = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn", "audit")}
    labels["pod-security.kubernetes.io/enforce-version"] = "latest"
    await kube.call(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
    )
    data = {k: base64.b64encode(b"testing").decode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    await kube.call(
        "POST",
        f"/api/v1/namespaces/{name}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            # opted in: the operator mounts no other Secret (engine.credentials)
            "metadata": {"name": CREDENTIALS_SECRET, "labels": {"conveyor.dev/credentials": "true"}},
            "data": data,
        },
    )
    await wait_for(
        lambda: kube.call("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default", ok=(404,)),
        30,
        "the default ServiceAccount",
    )
    yield name
    with contextlib.suppress(ApiError):
        await kube.call("DELETE", f"/api/v1/namespaces/{name}", ok=(404,))


class OperatorProcess:
    """The real operator (Kopf + Conveyor's handlers) in a thread with its own event loop, as
    a separate process would be (stopping Kopf cancels every task of its loop); restartable.
    It logs in with $KUBECONFIG: a token of the chart's ServiceAccount."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    async def start(self) -> None:
        self.stop_flag = threading.Event()
        ready = threading.Event()

        async def main() -> None:
            controller = Controller(self.settings, KubeClient(Connection.from_environment()))
            await kopf.operator(
                clusterwide=True,
                standalone=True,
                memo=kopf.Memo(controller=controller),
                stop_flag=self.stop_flag,
                ready_flag=ready,
            )

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as err:  # surfaced by stop()
                self.errors.append(err)
                ready.set()

        self.thread = threading.Thread(target=run, name="operator", daemon=True)
        self.thread.start()
        await asyncio.to_thread(ready.wait, 30)
        assert not self.errors, self.errors

    async def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 30)
        assert not self.thread.is_alive(), "the operator did not stop"
        self.thread = None
        assert not self.errors, self.errors


def operator_settings(s3_endpoint: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        image="conveyor:test",
        resync_seconds=2.0,
        credentials_secret=CREDENTIALS_SECRET,
        # the shared S3 server checks no credentials: one Secret serves as both (test_credentials
        # shows read-only credentials refused a write by a server that checks them)
        read_only_credentials_secret=CREDENTIALS_SECRET,
        s3_endpoint=s3_endpoint,
        job_ttl_seconds=600,
    )
    values.update(overrides)
    return Settings(**values)


@pytest_asyncio.fixture
async def operator(kube: Api, ns: str, s3_endpoint: str) -> AsyncIterator[OperatorProcess]:
    proc = OperatorProcess(operator_settings(s3_endpoint))
    await proc.start()
    yield proc
    if proc.thread is not None:
        # the namespace goes while the operator runs: nothing of ours may hold it up
        await kube.call("DELETE", f"/api/v1/namespaces/{ns}", ok=(404,))
        await namespace_gone(kube, ns, timeout=90)
    await proc.stop()


@pytest_asyncio.fixture
async def model_operator(kube: Api, ns: str, s3_endpoint: str) -> AsyncIterator[OperatorProcess]:
    """The operator, looking at each ModelDeployment (champion, drift, live quality) every 2 s."""
    proc = OperatorProcess(operator_settings(s3_endpoint, drift_seconds=2.0))
    await proc.start()
    yield proc
    await kube.call("DELETE", f"/api/v1/namespaces/{ns}", ok=(404,))
    await namespace_gone(kube, ns, timeout=180)
    await proc.stop()


@pytest.fixture
def s3(bucket: str, s3_endpoint: str) -> dict[str, str]:
    return {"bucket": bucket, "endpoint": s3_endpoint}


@pytest.fixture
def shared_dir(cluster: Cluster) -> Path:
    """A folder both the tests and the pods see (a pod's /tmp is its own emptyDir)."""
    path = cluster.root / "shared" / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    return path
