"""Human approval end to end on this machine: an evaluate stage with `promotion: Manual` leaves
the champion as it is until `conveyor approve`; `conveyor reject` records why and promotes
nothing; `conveyor serve --pipeline` serves the approved model."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conveyor.artifacts import champion as champions
from conveyor.artifacts import layout
from conveyor.artifacts.store import LocalStore
from tests.integration.test_local_run import conveyor, run_json, write_pipeline

PARAMS = [{"name": "depth", "default": "1"}]


def _pipeline(tmp_path: Path) -> Path:
    return write_pipeline(
        tmp_path,
        [
            {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
            {"name": "split", "uses": "transform", "dependsOn": ["ingest"], "with": {"randomState": 1}},
            {
                "name": "train",
                "uses": "train",
                "dependsOn": ["split"],
                "with": {
                    "estimator": "sklearn.tree.DecisionTreeClassifier",
                    "params": {"max_depth": "$(params.depth)", "random_state": 0},
                },
            },
            {
                "name": "evaluate",
                "uses": "evaluate",
                "dependsOn": ["train", "split"],
                "with": {
                    "gate": {"metric": "accuracy", "min": 0.5},
                    "compareTo": "champion",
                    "promotion": "Manual",
                },
            },
        ],
        name="iris",
        params=PARAMS,
    )


def _served_sha(store: Path) -> str:
    """The digest of the model `conveyor serve --pipeline iris` loads (its V2 model metadata)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "conveyor", "serve", "--pipeline", "iris", "--store", str(store)]
    cmd += ["--backend", "skops"]
    server = subprocess.Popen([*cmd, "--port", str(port), "--host", "127.0.0.1"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/iris") as resp:
                    meta: dict[str, Any] = json.loads(resp.read())
                    return str(meta["parameters"]["sha256"])
            except OSError:
                time.sleep(0.3)
        raise AssertionError("the server did not answer")
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.slow
def test_manual_promotion_waits_for_approval_and_a_rejection_is_recorded(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    pipeline = _pipeline(tmp_path)
    store = LocalStore(store_dir)
    # a first model waits: nothing is champion until it is approved
    code, first = run_json(str(pipeline), "--store", str(store_dir), "-p", "depth=1")
    assert code == 0, first
    run1 = first["run"]
    assert first["model"]["approval"] == "Pending" and not first["model"]["promoted"]
    assert champions.current(store, "default", "iris").champion is None
    conveyor("approve", run1, "--store", str(store_dir), "--as", "alice")
    champ = champions.current(store, "default", "iris").champion
    assert champ is not None and champ.run == run1 and champ.version == 1 and champ.approved_by == "alice"
    record = layout.read_run_record(store, "default", "iris", run1)
    assert record is not None and record.model is not None
    assert (record.model.approval, record.model.approved_by, record.model.promoted) == (
        "Approved",
        "alice",
        True,
    )
    assert record.model.version == 1
    again = conveyor("approve", run1, "--store", str(store_dir), "--as", "bob")  # idempotent
    assert "already approved by alice" in again.stdout
    assert champions.current(store, "default", "iris").champion.version == 1  # type: ignore[union-attr]

    # a better model waits; the champion (and what is served) stays version 1 until approval
    code, second = run_json(str(pipeline), "--store", str(store_dir), "-p", "depth=4")
    assert code == 0 and second["model"]["approval"] == "Pending", second
    run2 = second["run"]
    assert champions.current(store, "default", "iris").champion.run == run1  # type: ignore[union-attr]
    assert _served_sha(store_dir) == first["model"]["sha256"]
    refused = conveyor("reject", run2, "--store", str(store_dir), "--as", "carol", check=False)
    assert refused.returncode != 0 and "--reason" in refused.stderr  # a rejection needs a reason
    conveyor("approve", run2, "--store", str(store_dir), "--as", "bob")
    champ2 = champions.current(store, "default", "iris").champion
    assert champ2 is not None and champ2.run == run2 and champ2.version == 2
    assert champ2.model.sha256 == second["model"]["sha256"]
    assert _served_sha(store_dir) == second["model"]["sha256"]

    # a third run is rejected: nothing rolls, the record says who and why; approving it is refused
    code, third = run_json(str(pipeline), "--store", str(store_dir), "-p", "depth=3")
    assert code == 0 and third["model"]["approval"] == "Pending", third
    run3 = third["run"]
    conveyor("reject", run3, "--store", str(store_dir), "--as", "carol", "--reason", "fails the bias review")
    assert champions.current(store, "default", "iris").champion.version == 2  # type: ignore[union-attr]
    record3 = layout.read_run_record(store, "default", "iris", run3)
    assert record3 is not None and record3.model is not None
    assert (record3.model.approval, record3.model.approved_by) == ("Rejected", "carol")
    assert record3.model.approval_reason == "fails the bias review" and not record3.model.promoted
    late = conveyor("approve", run3, "--store", str(store_dir), check=False)
    assert late.returncode == 1 and "rejected by carol" in late.stderr and "Traceback" not in late.stderr
    shown = conveyor("show", run3, "--store", str(store_dir), "--json")
    assert json.loads(shown.stdout)["model"]["approvalReason"] == "fails the bias review"
    unknown = conveyor("approve", "no-such-run", "--store", str(store_dir), check=False)
    assert unknown.returncode == 1 and "no run 'no-such-run'" in unknown.stderr
