"""`conveyor models PIPELINE` lists the promoted versions; `conveyor show` prints a run's
model version and the hyperparameters it was trained with."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.api.pipelinerun import ModelRecord
from conveyor.artifacts import champion as champions
from conveyor.artifacts import layout
from conveyor.artifacts.layout import Champion, RunRecord
from conveyor.artifacts.store import LocalStore
from conveyor.cli import main
from conveyor.engine.invocation import ArtifactRef

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _store(tmp_path: Path) -> LocalStore:
    """Two promotions of pipeline p: run r1 (manual) then run r2 (drift)."""
    store = LocalStore(tmp_path / "store")
    for version, (run, trigger, acc) in enumerate((("r1", "manual", 0.91), ("r2", "drift", 0.95)), start=1):
        model = ArtifactRef(uri=store.uri(f"default/p/{run}/train/model.skops"), sha256=run, bytes=1)
        state = champions.current(store, "default", "p")
        new = Champion(run=run, model=model, metrics={"accuracy": acc}, promoted_at=T, version=version)
        assert champions.promote(store, "default", "p", state, new)
        record = RunRecord(
            namespace="default",
            pipeline="p",
            run=run,
            phase="Succeeded",
            spec_digest="d",
            params={},
            version="v",
            start_time=T,
            trigger=trigger,
            model=ModelRecord(
                uri=model.uri,
                sha256=model.sha256,
                metrics={"accuracy": acc},
                promoted=True,
                version=version,
                decision=f"promoted as version {version}",
                hyperparameters={"C": "0.1", "solver": "lbfgs"} if run == "r2" else {},
            ),
        )
        layout.write_run_record(store, record)
    return store


def test_models_lists_every_version_oldest_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path)
    assert main(["models", "p", "--store", str(tmp_path / "store")]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        ["1", "r1", "accuracy=0.9100", "2026-03-01 12:00:00", "manual", ""],
        ["2 *", "r2", "accuracy=0.9500", "2026-03-01 12:00:00", "drift", ""],
    ]


def test_models_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path)
    assert main(["models", "p", "--store", str(tmp_path / "store"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["run"], r["champion"], r["trigger"], r["approvedBy"]) for r in rows] == [
        (1, "r1", False, "manual", ""),
        (2, "r2", True, "drift", ""),
    ]


def test_models_of_a_pipeline_without_promotions_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(tmp_path)
    assert main(["models", "nope", "--store", str(tmp_path / "store")]) == 1
    assert "pipeline 'nope' (namespace default) has no promoted model" in capsys.readouterr().err


def test_show_prints_version_and_hyperparameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path)
    assert main(["show", "r2", "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "version: 2 (promoted by this run" in out
    assert "hyperparameters: C=0.1, solver=lbfgs" in out


def test_runs_names_the_version_promoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path)
    assert main(["runs", "--store", str(tmp_path / "store")]) == 0
    assert [line.split("\t")[-1] for line in capsys.readouterr().out.splitlines()] == ["yes (v1)", "yes (v2)"]
