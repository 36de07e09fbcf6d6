"""`conveyor run` of a pipeline whose store is `spec.artifacts.s3` uses that spec's `endpoint`
(MinIO; moto here), for itself and for the stages it starts, as the operator gives it to stage
pods: with no CONVEYOR_S3_ENDPOINT in the environment, and over one that points elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.artifacts.store import make_s3_client

PIPELINE = """\
apiVersion: conveyor.dev/v1alpha1
kind: Pipeline
metadata: {{name: endpoint}}
spec:
  artifacts:
    s3: {{bucket: {bucket}, prefix: runs, endpoint: "{endpoint}"}}
  stages:
    - {{name: ingest, uses: ingest, with: {{source: "sklearn://iris"}}}}
    - {{name: validate, uses: validate, dependsOn: [ingest]}}
"""


@pytest.mark.parametrize("elsewhere", [None, "http://127.0.0.1:9"], ids=["no-env", "env-elsewhere"])
def test_the_pipelines_endpoint_is_used(
    bucket: str, s3_endpoint: str, tmp_path: Path, elsewhere: str | None
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(bucket=bucket, endpoint=s3_endpoint))
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_S3_ENDPOINT"}
    env |= {"HOME": str(tmp_path), "AWS_MAX_ATTEMPTS": "1"}
    if elsewhere:
        env["CONVEYOR_S3_ENDPOINT"] = elsewhere  # port 9: nothing listens
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", str(path), "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout)
    assert [s["phase"] for s in record["stages"]] == ["Succeeded", "Succeeded"]
    data = record["artifacts"]["ingest"]["data"]["uri"]
    assert data.startswith(f"s3://{bucket}/runs/")
    key = data.removeprefix(f"s3://{bucket}/")
    head = make_s3_client(s3_endpoint).head_object(Bucket=bucket, Key=key)  # written by the stage
    assert head["ContentLength"] == record["artifacts"]["ingest"]["data"]["bytes"]
