"""A store moved or copied to another folder: its records name artifacts under the old root,
and are read as naming the same keys under the new one (old records stay readable)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from conveyor.api.pipelinerun import ModelRecord, StageStatus
from conveyor.artifacts import champion as champions
from conveyor.artifacts import layout
from conveyor.artifacts.layout import Champion, StageResult
from conveyor.artifacts.store import LocalStore


def _written(root: Path) -> StageResult:
    store = LocalStore(root)
    model = store.write_bytes("ns/p/r1/train/model.skops", b"model", "application/x-skops")
    result = StageResult(outputs={"model": model}, cache_key="k")
    layout.commit_result(store, "ns/p/r1/train", result)
    layout.cache_record(store, "k", result)
    champion = Champion(run="r1", model=model, promoted_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert champions.promote(store, "ns", "p", champions.current(store, "ns", "p"), champion)
    return result


def test_a_copied_store_finds_its_cache_results_and_champion_under_its_own_root(tmp_path: Path) -> None:
    _written(tmp_path / "before")
    shutil.copytree(tmp_path / "before", tmp_path / "after")
    shutil.rmtree(tmp_path / "before")
    store = LocalStore(tmp_path / "after")
    here = store.uri("ns/p/r1/train/model.skops")
    hit = layout.cache_lookup(store, "k")  # was None: the recorded URI pointed into "before"
    assert hit is not None and hit.outputs["model"].uri == here
    committed = layout.read_result(store, "ns/p/r1/train")
    assert committed is not None and store.verify(committed.outputs["model"])
    for champion in (
        layout.read_champion(store, "ns", "p"),
        champions.current(store, "ns", "p").champion,
        champions.read_version(store, "ns", "p", 1),
    ):
        assert champion is not None and champion.model.uri == here


def test_a_uri_outside_any_run_is_left_as_recorded(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ref = _written(tmp_path).outputs["model"].model_copy(update={"uri": "s3://bucket/model.skops"})
    assert layout.relocated(store, ref) == ref


def test_a_copied_stores_run_records_name_its_own_artifacts(tmp_path: Path) -> None:
    """`show`, `runs` and `serve --pipeline` read run.json: its artifacts, stage outputs and model
    named the old root (a copy's `show` pointed into the deleted folder)."""
    model = _written(tmp_path / "before").outputs["model"]
    record = layout.RunRecord(
        namespace="ns",
        pipeline="p",
        run="r1",
        phase="Succeeded",
        spec_digest="d",
        params={},
        version="test",
        start_time=datetime(2026, 1, 1, tzinfo=UTC),
        stages=[StageStatus(name="train", phase="Succeeded", outputs={"model": model.uri})],
        artifacts={"train": {"model": model}},
        model=ModelRecord(uri=model.uri, sha256=model.sha256),
    )
    layout.write_run_record(LocalStore(tmp_path / "before"), record)
    shutil.copytree(tmp_path / "before", tmp_path / "after")
    shutil.rmtree(tmp_path / "before")
    store = LocalStore(tmp_path / "after")
    here = store.uri("ns/p/r1/train/model.skops")
    for read in (layout.read_run_record(store, "ns", "p", "r1"), *layout.list_run_records(store)):
        assert read is not None
        assert read.artifacts["train"]["model"].uri == here
        assert read.stages[0].outputs == {"model": here}
        assert read.model is not None and read.model.uri == here
