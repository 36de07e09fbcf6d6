"""Store credentials, least privilege, on the real control plane with the real operator:

- a Pipeline naming a Secret that has not opted in (label `conveyor.dev/credentials: "true"`)
  gets no Job, and its run's status says which Secret, which label and the fix; once the
  Secret is labelled the same run's stage runs;
- a model server is given only the read-only Secret, serves from an S3 server that checks
  every request against IAM policies (moto with IAM enforced: the policies are the chart's
  bundled-MinIO ones), and a write with its credentials is refused by that server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
import yaml
from botocore.exceptions import ClientError

from conveyor.kube.client import SECRETS, KubeClient
from conveyor.kube.credentials import Connection
from tests.cluster.api import Api
from tests.cluster.cluster import CHART, tools
from tests.integration.kube.conftest import (
    OperatorProcess,
    create,
    get,
    items,
    merge_patch,
    namespace_gone,
    operator_settings,
    wait_for,
)
from tests.integration.kube.runs_helpers import breast_cancer, custom, events_of, pipeline, run_of, run_status

LABEL = "conveyor.dev/credentials"


def secret(name: str, key_id: str, key: str, opted_in: bool) -> dict[str, Any]:
    data = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": key}
    meta: dict[str, Any] = {"name": name}
    if opted_in:
        meta["labels"] = {LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def succeeded_condition(st: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == "Succeeded"), {})


async def test_a_secret_that_has_not_opted_in_gets_no_job_until_it_does(
    kube: Api, ns: str, operator: OperatorProcess, s3: dict[str, str]
) -> None:
    await create(kube, secret("team-s3", "testing", "testing", opted_in=False), ns)
    doc = pipeline("p", [custom("a", "pass")], s3)
    doc["spec"]["artifacts"]["s3"].update(endpoint=s3["endpoint"], credentialsSecret="team-s3")
    await create(kube, doc, ns)
    await create(kube, run_of("p", "r1"), ns)

    async def refused() -> dict[str, Any] | None:
        st = await run_status(kube, ns, "r1")
        return st if succeeded_condition(st).get("reason") == "CredentialsNotAllowed" else None

    st = await wait_for(refused, 60, "the run to say its Secret is not allowed")
    condition = succeeded_condition(st)
    assert (st["phase"], condition["status"]) == ("Pending", "Unknown")
    assert condition["message"] == (
        "spec.artifacts.s3.credentialsSecret: Secret 'team-s3' has not opted in to being mounted "
        f"into Conveyor's pods (it has no label {LABEL}); the operator mounts only Secrets that do "
        "(fix: if this namespace's pipelines (custom images included) may read it: "
        f'kubectl label secret team-s3 -n {ns} {LABEL}="true")'
    )
    assert ("CredentialsNotAllowed", condition["message"]) in await events_of(kube, ns, "r1")
    # looked at again every resync (2 s here): still no Job, however long it waits
    await asyncio.sleep(5)
    assert await items(kube, "jobs", ns) == []
    assert succeeded_condition(await run_status(kube, ns, "r1"))["reason"] == "CredentialsNotAllowed"

    await merge_patch(kube, "secrets", ns, "team-s3", {"metadata": {"labels": {LABEL: "true"}}})

    async def done() -> dict[str, Any] | None:
        st = await run_status(kube, ns, "r1")
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    st = await wait_for(done, 90, "the run to finish once the Secret opted in")
    assert st["phase"] == "Succeeded", st
    (job,) = await items(kube, "jobs", ns)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "team-s3"}}]


async def test_the_operator_reads_a_secrets_metadata_never_its_data(ns: str, kube: Api) -> None:
    """As the chart's ServiceAccount (`get` on secrets, nothing more), the real API server
    answers the operator's read with a PartialObjectMetadata: labels, no data."""
    await create(kube, secret("team-s3", "id", "key", opted_in=True), ns)
    client = KubeClient(Connection.from_environment())  # the operator's identity
    try:
        meta = await client.get_metadata(SECRETS, ns, "team-s3")
        assert await client.get_metadata(SECRETS, ns, "absent") is None
    finally:
        await client.close()
    assert meta is not None
    assert (meta["kind"], meta["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")
    assert meta["metadata"]["labels"] == {LABEL: "true"}
    assert "data" not in meta and "stringData" not in meta


# --- a model server's credentials can only read ----------------------------------------------


@dataclass
class IamStore:
    """An S3 server that authenticates every request and authorizes it by IAM policy."""

    endpoint: str
    bucket: str
    read_write: tuple[str, str]
    read_only: tuple[str, str]

    def client(self, keys: tuple[str, str]) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
        )


def chart_policies(bucket: str) -> dict[str, str]:
    """The bundled MinIO's policies as the chart renders them for `bucket`."""
    out = subprocess.run(
        [str(tools() / "helm"), "template", "c", str(CHART), "--show-only", "templates/minio.yaml"]
        + [arg for v in ("minio.enabled=true", f"minio.bucket={bucket}") for arg in ("--set", v)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap")
    return {name.removesuffix(".json"): text for name, text in config["data"].items()}


@pytest.fixture(scope="module")
def iam_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamStore]:
    """moto in a process of its own (its IAM switch is per process: the shared S3 server
    stays open), with a user per chart policy; then every request is checked."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                proc.poll()
                assert proc.returncode is None, "moto_server exited"
                time.sleep(0.1)
        anyone = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        anyone |= {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        bucket = "conveyor-iam"
        boto3.client("s3", **anyone).create_bucket(Bucket=bucket)
        iam = boto3.client("iam", **anyone)
        keys = {}
        for access, policy in chart_policies(bucket).items():
            iam.create_user(UserName=access)
            iam.put_user_policy(UserName=access, PolicyName=f"conveyor-{access}", PolicyDocument=policy)
            key = iam.create_access_key(UserName=access)["AccessKey"]
            keys[access] = (key["AccessKeyId"], key["SecretAccessKey"])
        enforce = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(enforce, timeout=5)
        yield IamStore(endpoint, bucket, keys["readwrite"], keys["readonly"])
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def train(store: IamStore, tmp_path: Path) -> dict[str, Any]:
    """The breast-cancer pipeline run by the local executor with the read-write user's keys."""
    doc = breast_cancer({"bucket": store.bucket, "endpoint": store.endpoint})
    train_stage = doc["spec"]["stages"][3]["with"]
    train_stage.pop("search", None)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_ACCESS_KEY_ID": store.read_write[0], "AWS_SECRET_ACCESS_KEY": store.read_write[1]}
    env["CONVEYOR_S3_ENDPOINT"] = store.endpoint  # `conveyor run` reads the endpoint from here
    argv = [sys.executable, "-m", "conveyor", "run", str(path), "--json", "--allow-rejected"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    record: dict[str, Any] = json.loads(proc.stdout)
    assert record["phase"] == "Succeeded", record
    return record


@pytest_asyncio.fixture
async def store_operator(kube: Api, ns: str, iam_store: IamStore) -> AsyncIterator[OperatorProcess]:
    settings = operator_settings(
        iam_store.endpoint,
        credentials_secret="store-rw",
        read_only_credentials_secret="store-ro",
        drift_seconds=2.0,
    )
    proc = OperatorProcess(settings)
    await proc.start()
    yield proc
    await kube.call("DELETE", f"/api/v1/namespaces/{ns}", ok=(404,))
    await namespace_gone(kube, ns, timeout=180)
    await proc.stop()


def md_ready_condition(obj: dict[str, Any] | None) -> dict[str, Any]:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


@pytest.mark.slow
async def test_a_model_server_reads_with_read_only_credentials_and_its_write_is_refused(
    kube: Api, ns: str, iam_store: IamStore, store_operator: OperatorProcess, tmp_path: Path
) -> None:
    record = await asyncio.to_thread(train, iam_store, tmp_path)
    model_uri = record["model"]["uri"]
    await create(kube, secret("store-rw", *iam_store.read_write, opted_in=True), ns)
    await create(kube, secret("store-ro", *iam_store.read_only, opted_in=False), ns)
    md = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bc"},
        "spec": {"model": {"uri": model_uri}, "replicas": 1},
    }
    await create(kube, md, ns)

    async def refused() -> dict[str, Any] | None:
        ready = md_ready_condition(await get(kube, "modeldeployments", ns, "bc"))
        return ready if ready.get("reason") == "CredentialsNotAllowed" else None

    ready = await wait_for(refused, 60, "the ModelDeployment to say its Secret is not allowed")
    assert ready["status"] == "False"
    assert "CONVEYOR_READ_ONLY_CREDENTIALS_SECRET: Secret 'store-ro' has not opted in" in ready["message"]
    assert await get(kube, "deployments", ns, "bc") is None

    await merge_patch(kube, "secrets", ns, "store-ro", {"metadata": {"labels": {LABEL: "true"}}})

    async def serving() -> dict[str, Any] | None:
        pods = await items(kube, "pods", ns, "app.kubernetes.io/component=model-server")
        conds = [c for p in pods for c in (p.get("status") or {}).get("conditions") or []]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
        return pods[0] if len(pods) == 1 and ready else None

    # Ready: the server loaded the model (and checked its digest) reading with store-ro's keys
    pod = await wait_for(serving, 120, "the model server to load its model read-only")
    (container,) = pod["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "store-ro"}}]

    # a write with the pod's own credentials, as the pod has them, is refused by the S3 server
    named = await get(kube, "secrets", ns, container["envFrom"][0]["secretRef"]["name"])
    assert named is not None
    pod_keys = tuple(
        base64.b64decode(named["data"][k]).decode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    )
    assert pod_keys == iam_store.read_only
    key = model_uri.removeprefix(f"s3://{iam_store.bucket}/")
    as_pod = iam_store.client(pod_keys)  # type: ignore[arg-type]
    with pytest.raises(ClientError) as err:
        await asyncio.to_thread(as_pod.put_object, Bucket=iam_store.bucket, Key=key, Body=b"not a model")
    assert (
        err.value.response["Error"]["Code"],
        err.value.response["ResponseMetadata"]["HTTPStatusCode"],
    ) == (
        "AccessDenied",
        403,
    )
    with pytest.raises(ClientError) as err:
        await asyncio.to_thread(as_pod.delete_object, Bucket=iam_store.bucket, Key=key)
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    body = await asyncio.to_thread(as_pod.get_object, Bucket=iam_store.bucket, Key=key)
    assert body["ContentLength"] > 0  # reading is what it may do
    # the stage pods' user may write: the refusal is the policy's, not a broken client
    as_stage = iam_store.client(iam_store.read_write)
    await asyncio.to_thread(as_stage.put_object, Bucket=iam_store.bucket, Key="scratch/x", Body=b"x")
