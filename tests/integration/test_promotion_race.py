"""Ten overlapping `conveyor run`s of one pipeline on one store, each training a different model:
promotion is a compare-and-swap on the champion, so the final champion is the best model that
passed, and a run records `promoted: true` only when its model became the champion."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.artifacts import layout
from conveyor.artifacts.store import LocalStore, S3Store, Store

RUNS = 10
GATE = 0.9
DEPTHS = list(range(1, RUNS + 1))
CONVEYOR_RUN = [sys.executable, "-m", "conveyor", "run", "--json"]


def race_pipeline(tmp_path: Path) -> Path:
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "race"},
        "spec": {
            "params": [{"name": "depth", "default": "3"}],
            "stages": [
                {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://breast_cancer"}},
                {
                    "name": "transform",
                    "uses": "transform",
                    "dependsOn": ["ingest"],
                    "with": {"testSize": 0.3, "randomState": 3},
                },
                {
                    "name": "train",
                    "uses": "train",
                    "dependsOn": ["transform"],
                    "with": {
                        "estimator": "sklearn.tree.DecisionTreeClassifier",
                        "params": {"max_depth": "$(params.depth)", "random_state": 0},
                    },
                },
                {
                    "name": "evaluate",
                    "uses": "evaluate",
                    "dependsOn": ["train"],
                    "with": {"gate": {"metric": "accuracy", "min": GATE}, "compareTo": "champion"},
                },
            ],
        },
    }
    path = tmp_path / "race.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_concurrently(pipeline: Path, store: str) -> None:
    """RUNS `conveyor run` processes at once, one per depth; each must succeed."""
    start = threading.Barrier(RUNS)

    def one(depth: int) -> subprocess.CompletedProcess[str]:
        start.wait()
        return subprocess.run(
            [*CONVEYOR_RUN, str(pipeline), "--store", store, "--param", f"depth={depth}", "--no-cache"],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=600,
        )

    with ThreadPoolExecutor(RUNS) as pool:
        done = list(pool.map(one, DEPTHS))
    for proc in done:  # 3: the run succeeded, its model did not pass (its gate or the comparison)
        assert proc.returncode in (0, 3), proc.stdout[-2000:] + proc.stderr[-2000:]


def check_promotions(store: Store) -> dict[str, Any]:
    records = [r for r in layout.list_run_records(store) if r.pipeline == "race"]
    assert len(records) == RUNS and all(r.phase == "Succeeded" for r in records)
    accuracy = {r.run: r.model.metrics["accuracy"] for r in records if r.model}
    passed = {run for run, value in accuracy.items() if value >= GATE}  # the gate, not the comparison
    assert passed, "no model passed the gate: the test shows nothing"
    best = max(accuracy[r] for r in passed)
    champion = layout.read_champion(store, "default", "race")
    assert champion is not None
    # 1. the final champion is the best model that passed
    assert accuracy[champion.run] == best, (
        f"champion {champion.run} has accuracy {accuracy[champion.run]:.4f}, the best that "
        f"passed has {best:.4f}; promoted: "
        + str({r.run: accuracy[r.run] for r in records if r.model and r.model.promoted})
    )
    # 2. `promoted` is true exactly for the runs that were champion at some point, in version
    # order, each at least as good as the one before it, the last one being the champion
    from conveyor.artifacts.champion import list_versions

    versions = list_versions(store, "default", "race")
    promoted = {r.run: r.model.version for r in records if r.model and r.model.promoted}
    assert {v.run: v.version for v in versions} == promoted
    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
    scores = [accuracy[v.run] for v in versions]
    assert scores == sorted(scores), scores
    assert versions[-1].run == champion.run and champion.version == len(versions)
    assert all(v.run in passed for v in versions)
    return {
        "accuracy": accuracy,
        "passed": sorted(passed),
        "versions": [(v.version, v.run) for v in versions],
    }


@pytest.fixture
def atomic_moto_puts(s3_endpoint: str) -> Iterator[None]:
    """Real S3 evaluates a conditional PUT's If-Match / If-None-Match and writes the object as
    one step; moto 5.2.5 checks the condition, then writes, without a lock between the two
    (moto/s3/responses.py, put_object), so two racing conditional PUTs can both succeed there.
    Serialising moto's put_object makes the fake keep the guarantee the real service gives."""
    from moto.s3.responses import S3Response

    original = S3Response.put_object
    lock = threading.Lock()

    def put_object(self: S3Response) -> Any:
        with lock:
            return original(self)

    S3Response.put_object = put_object  # type: ignore[method-assign]
    yield
    S3Response.put_object = original  # type: ignore[method-assign]


@pytest.mark.slow
def test_ten_overlapping_runs_on_a_local_store(tmp_path: Path) -> None:
    run_concurrently(race_pipeline(tmp_path), str(tmp_path / "store"))
    print(check_promotions(LocalStore(tmp_path / "store")))


@pytest.mark.slow
def test_ten_overlapping_runs_on_s3(tmp_path: Path, bucket: str, s3_env: str, atomic_moto_puts: None) -> None:
    run_concurrently(race_pipeline(tmp_path), f"s3://{bucket}/race")
    print(check_promotions(S3Store(bucket, "race")))
