"""The image, built from the Dockerfile and run with containerd + runc as a pod would run it: as
its non-root USER, on a read-only root filesystem, with the test S3 server (moto) reached over the
host network. `conveyor stage` and `conveyor run` write to S3; `conveyor serve` serves the
champion from there."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from importlib import metadata
from typing import Any

from packaging.utils import canonicalize_name

from conveyor.artifacts import layout
from conveyor.artifacts.store import S3Store
from conveyor.engine.invocation import StageInvocation
from tests.conftest import EXAMPLES, REPO, free_port
from tests.integration.image.containerd import Containerd

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def in_python(containerd: Containerd, image: str, name: str, code: str) -> Any:
    """What `code` (run by the image's python) prints, as JSON."""
    proc = containerd.run(image, name, ["python3", "-c", code])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_version(containerd: Containerd, image: str) -> None:
    proc = containerd.run(image, "version", ["conveyor", "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"conveyor {metadata.version('conveyor-operator')}"


def test_non_root_on_a_read_only_root(containerd: Containerd, image: str) -> None:
    code = (
        "import json, os; open('/tmp/scratch', 'w').write('x'); "
        "print(json.dumps([os.getuid(), os.getgid(), bool(os.statvfs('/').f_flag & os.ST_RDONLY)]))"
    )
    uid, gid, read_only = in_python(containerd, image, "whoami", code)
    assert (uid, gid) == (10001, 10001)
    assert read_only


def test_installs_exactly_what_constraints_pin(containerd: Containerd, image: str) -> None:
    """Every distribution in the image's venv is pinned, at that version; no pip, no setuptools."""
    code = (
        "import json; from importlib import metadata as m; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    installed: dict[str, str] = {
        canonicalize_name(n): v for n, v in in_python(containerd, image, "dists", code).items()
    }
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    assert installed.pop("conveyor-operator") == metadata.version("conveyor-operator")
    assert not {"pip", "setuptools"} & set(installed), "build tools left in the image"
    unpinned = {n: v for n, v in installed.items() if pins.get(n) != v}
    assert not unpinned, f"installed but not pinned so by constraints.txt: {unpinned}"


def test_stage_writes_to_s3(containerd: Containerd, image: str, bucket: str, s3_env: str) -> None:
    store = S3Store(bucket, "runs")
    prefix = layout.stage_prefix("default", "iris", "r1", "ingest")
    invocation = StageInvocation(
        namespace="default",
        pipeline="iris",
        run="r1",
        stage="ingest",
        uses="ingest",
        options={"source": "sklearn://iris"},
        store=store.location.uri,
        output_prefix=store.uri(prefix),
    )
    env = {**S3_ENV, "CONVEYOR_S3_ENDPOINT": s3_env, "CONVEYOR_INVOCATION": invocation.to_json()}
    proc = containerd.run(image, "stage", ["conveyor", "stage"], env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = layout.read_result(store, prefix)
    assert result is not None and result.metrics["rows"] == 150


def test_run_then_serve_the_champion_from_s3(
    containerd: Containerd, image: str, bucket: str, s3_env: str
) -> None:
    env = {**S3_ENV, "CONVEYOR_S3_ENDPOINT": s3_env}
    store = f"s3://{bucket}/runs"
    pipeline = ["type=bind", f"src={EXAMPLES / 'breast-cancer'}", "dst=/pipeline", "options=rbind:ro"]
    proc = containerd.run(
        image,
        "run",
        ["conveyor", "run", "/pipeline/pipeline.yaml", "--store", store, "-o", "json"],
        env=env,
        mounts=[",".join(pipeline)],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(proc.stdout)
    assert record["model"]["uri"].startswith(f"{store}/default/breast-cancer/")
    assert layout.read_champion(S3Store(bucket, "runs"), "default", "breast-cancer") is not None

    port = free_port()
    serve = ["conveyor", "serve", "--pipeline", "breast-cancer", "--store", store]
    with containerd.running(image, "serve", [*serve, "--host", "127.0.0.1", "--port", str(port)], env) as log:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/health/ready", log)
        from sklearn.datasets import load_breast_cancer

        row = load_breast_cancer(as_frame=True).frame.drop(columns="target").iloc[0]
        body = {
            "inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in row.items()]
        }
        request = urllib.request.Request(
            f"{base}/v2/models/breast-cancer/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.load(resp)
        assert answer["model_name"] == "breast-cancer"
        assert answer["outputs"][0]["data"][0] in (0, 1)


def wait_ready(url: str, log: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                assert resp.status == 200
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise AssertionError(f"the served model was not ready:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)
