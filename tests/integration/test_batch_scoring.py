"""Batch scoring end to end: `conveyor run` of the breast-cancer pipeline, then of the nightly
scoring example (examples/batch-scoring) on the same store, as a user would run them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conveyor.artifacts import layout
from conveyor.artifacts.models import load_model
from conveyor.artifacts.store import LocalStore
from tests.conftest import EXAMPLES
from tests.integration.test_local_run import BREAST, conveyor, run_json, stages

SCORING = EXAMPLES / "batch-scoring" / "pipeline.yaml"


def _outputs(store: LocalStore, record: dict[str, object], stage: str) -> layout.StageResult:
    result = layout.read_result(
        store, layout.stage_prefix("default", str(record["pipeline"]), str(record["run"]), stage)
    )
    assert result is not None
    return result


@pytest.mark.slow
def test_the_nightly_example_scores_with_the_champion(tmp_path: Path) -> None:
    assert "1 file(s) valid" in conveyor("validate", str(SCORING)).stdout
    doc = yaml.safe_load(SCORING.read_text())
    assert doc["spec"]["schedule"] and [s["uses"] for s in doc["spec"]["stages"]] == ["ingest", "predict"]

    store = LocalStore(tmp_path / "store")
    code, record = run_json(str(SCORING), "--store", str(tmp_path / "store"))
    assert code == 1  # no champion yet: the stage says what to do
    assert "pipeline 'breast-cancer' has no promoted model" in stages(record)["predict"]["message"]

    code, trained = run_json(str(BREAST), "--store", str(tmp_path / "store"))
    assert code == 0 and trained["model"]["promoted"], trained["message"]
    code, record = run_json(str(SCORING), "--store", str(tmp_path / "store"))
    assert code == 0, record["message"]
    assert record["model"] is None  # a scoring run produces no model

    champion = layout.read_champion(store, "default", "breast-cancer")
    assert champion is not None and champion.model.uri == trained["model"]["uri"]
    model = load_model(store.local_path(store.key(champion.model.uri), tmp_path), champion.model.sha256)
    data = pd.read_parquet(
        store.local_path(store.key(_outputs(store, record, "ingest").outputs["data"].uri), tmp_path)
    )
    predict = _outputs(store, record, "predict")
    scored = pd.read_parquet(store.local_path(store.key(predict.outputs["predictions"].uri), tmp_path))
    x = data[champion.model.meta["features"]]
    assert list(scored.columns) == ["target", "prediction", "proba_0", "proba_1"]
    assert scored["prediction"].tolist() == model.predict(x).tolist()
    assert scored["proba_1"].tolist() == model.predict_proba(x)[:, 1].tolist()
    metrics = stages(record)["predict"]["metrics"]
    assert metrics["rows"] == 569 and 0 <= metrics["drift_score"] < 0.1  # the training data itself
    assert metrics["drifted_features"] == 0

    # a pinned model: the same predictions, and the profile found through its run's record
    doc["spec"]["stages"][1]["with"]["model"] = {"uri": champion.model.uri}
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(yaml.safe_dump(doc))
    code, again = run_json(str(pinned), "--store", str(tmp_path / "store"))
    assert code == 0, again["message"]
    predict = _outputs(store, again, "predict")
    drift = json.loads(store.read_bytes(store.key(predict.outputs["drift"].uri)))
    assert champion.profile is not None and drift["reference"] == champion.profile.uri
    assert stages(again)["predict"]["metrics"]["drift_score"] == metrics["drift_score"]
    rescored = pd.read_parquet(store.local_path(store.key(predict.outputs["predictions"].uri), tmp_path))
    pd.testing.assert_frame_equal(rescored, scored)
