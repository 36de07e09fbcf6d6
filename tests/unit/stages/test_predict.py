"""The batch `predict` stage in-process: a model trained by the real stages scores a table, and
what it writes is what the model itself predicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from conveyor.api.stages import PredictOptions
from conveyor.artifacts.layout import read_champion
from conveyor.artifacts.models import load_model
from conveyor.artifacts.store import LocalStore
from conveyor.engine.invocation import ArtifactRef, StageInvocation
from conveyor.serving.monitor import DriftMonitor
from conveyor.stages.context import StageError
from conveyor.stages.runner import execute
from tests.conftest import EXAMPLES

PENGUINS = EXAMPLES / "penguins" / "penguins.csv"


class Runs:
    """Stages of any pipeline of one store, each fed the outputs of the stages it names."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = LocalStore(tmp_path / "store")
        self.outputs: dict[str, dict[str, ArtifactRef]] = {}
        self.run_name = "r1"  # the run the next stages belong to

    def run(self, pipeline: str, name: str, uses: str, options: dict[str, Any], deps: list[str]) -> Any:
        inv = StageInvocation(
            namespace="ns",
            pipeline=pipeline,
            run=self.run_name,
            stage=name,
            uses=uses,
            options=options,
            inputs={d: self.outputs[f"{pipeline}/{d}"] for d in deps},
            store=self.store.root,
            output_prefix=self.store.uri(f"ns/{pipeline}/{self.run_name}/{name}"),
        )
        result = execute(inv)
        self.outputs[f"{pipeline}/{name}"] = result.outputs
        return result

    def train(self, source: str, target: str, estimator: str, gate: dict[str, Any]) -> None:
        """The pipeline `train`: ingest -> transform -> train -> evaluate, which promotes."""
        self.run("train", "ingest", "ingest", {"source": source, "target": target}, [])
        self.run("train", "transform", "transform", {}, ["ingest"])
        self.run(
            "train", "train", "train", {"estimator": estimator, "params": {"random_state": 0}}, ["transform"]
        )
        ev = self.run("train", "evaluate", "evaluate", {"gate": gate}, ["train"])
        assert ev.metrics["promoted"] == 1.0

    def score(self, source: str, pipeline: str = "scoring", **options: Any) -> Any:
        """A scoring pipeline: ingest (no target) -> predict."""
        self.run(pipeline, "ingest", "ingest", {"source": source, "dropMissingTarget": False}, [])
        return self.run(
            pipeline, "predict", "predict", {"model": {"fromPipeline": "train"}, **options}, ["ingest"]
        )

    def table(self, ref: ArtifactRef) -> pd.DataFrame:
        return pd.read_parquet(self.store.local_path(self.store.key(ref.uri), Path("/nonexistent")))

    def champion_model(self) -> tuple[Any, ArtifactRef]:
        champ = read_champion(self.store, "ns", "train")
        assert champ is not None
        path = self.store.local_path(self.store.key(champ.model.uri), Path("/nonexistent"))
        return load_model(path, champ.model.sha256), champ.model


def penguins_without(tmp_path: Path, column: str) -> str:
    """The penguins table less the column a model predicts: what a nightly batch looks like."""
    df = pd.read_csv(PENGUINS).drop(columns=[column])
    path = tmp_path / "batch.csv"
    df.to_csv(path, index=False)
    return str(path)


CASES = [
    pytest.param(
        "sklearn://breast_cancer",
        "target",
        "sklearn.linear_model.LogisticRegression",
        {"metric": "accuracy", "min": 0.9},
        id="breast-cancer",
    ),
    pytest.param(
        str(PENGUINS),
        "species",
        "sklearn.ensemble.RandomForestClassifier",
        {"metric": "accuracy", "min": 0.9},
        id="penguins-species",
    ),
    pytest.param(
        str(PENGUINS),
        "body_mass_g",
        "sklearn.ensemble.RandomForestRegressor",
        {"metric": "r2", "min": 0.7},
        id="penguins-body-mass",
    ),
]


@pytest.mark.parametrize(("source", "target", "estimator", "gate"), CASES)
def test_predictions_equal_the_models_own(
    tmp_path: Path, source: str, target: str, estimator: str, gate: dict[str, Any]
) -> None:
    runs = Runs(tmp_path)
    runs.train(source, target, estimator, gate)
    batch = source if source.startswith("sklearn://") else penguins_without(tmp_path, target)
    result = runs.score(batch)

    model, ref = runs.champion_model()
    data = runs.table(runs.outputs["scoring/ingest"]["data"])
    x = data[ref.meta["features"]]
    if "island" in x.columns:  # penguins: categorical columns with missing values reach the model
        assert x["sex"].isna().any() and x["bill_length_mm"].isna().any()
    scored = runs.table(result.outputs["predictions"])
    assert len(scored) == len(data) == result.metrics["rows"]
    assert scored["prediction"].tolist() == model.predict(x).tolist()
    if ref.meta["task"] == "classification":
        proba = model.predict_proba(x)
        for i, cls in enumerate(model.classes_):
            np.testing.assert_array_equal(scored[f"proba_{cls}"].to_numpy(), proba[:, i])
    else:
        assert not [c for c in scored.columns if c.startswith("proba_")]
    assert list(scored.columns[: len(data.columns)]) == list(data.columns)  # every input column kept
    assert result.outputs["predictions"].meta["modelSha256"] == ref.sha256


def _breast_cancer_shifted() -> pd.DataFrame:
    import sklearn.datasets

    frame = sklearn.datasets.load_breast_cancer(as_frame=True).frame.drop(columns=["target"])
    frame["mean radius"] = frame["mean radius"] * 3
    return frame


def _penguins_on_one_island() -> pd.DataFrame:
    frame = pd.read_csv(PENGUINS).drop(columns=["species"])
    frame["island"] = "Dream"
    return frame


@pytest.mark.parametrize(
    ("source", "target", "estimator", "batch", "shifted"),
    [
        pytest.param(
            "sklearn://breast_cancer",
            "target",
            "sklearn.linear_model.LogisticRegression",
            _breast_cancer_shifted,
            "mean radius",
            id="breast-cancer-numeric",
        ),
        pytest.param(
            str(PENGUINS),
            "species",
            "sklearn.tree.DecisionTreeClassifier",
            _penguins_on_one_island,
            "island",
            id="penguins-categorical",
        ),
    ],
)
def test_drift_is_the_servers_drift_over_the_batch(
    tmp_path: Path, source: str, target: str, estimator: str, batch: Any, shifted: str
) -> None:
    runs = Runs(tmp_path)
    runs.train(source, target, estimator, {"metric": "accuracy", "min": 0.5})
    frame = batch()
    path = tmp_path / "shifted.parquet"
    frame.to_parquet(path)
    result = runs.score(str(path), keep=[])

    drift = json.loads(runs.store.read_bytes(runs.store.key(result.outputs["drift"].uri)))
    assert drift["drifted"] == [shifted]
    assert result.metrics["drifted_features"] == 1.0
    assert result.metrics["drift_score"] == drift["score"] == drift["features"][shifted]["psi"] > 0.25

    # the model server's monitor, fed the same rows (missing values as JSON null) and
    # predictions, computes the same statistics
    champ = read_champion(runs.store, "ns", "train")
    assert champ is not None and champ.profile is not None
    profile = json.loads(runs.store.read_bytes(runs.store.key(champ.profile.uri)))
    monitor = DriftMonitor("m", "v", profile, window=len(frame), min_samples=1)
    scored = runs.table(result.outputs["predictions"])
    classes = sorted(map(str, runs.table(runs.outputs["train/ingest"]["data"])[target].unique()))
    assert list(scored.columns) == ["prediction", *(f"proba_{c}" for c in classes)]  # keep: []
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    monitor.observe(rows, scored["prediction"].tolist())
    assert monitor.compute() == pytest.approx(result.metrics["drift_score"])
    for name, stats in drift["features"].items():
        assert stats == pytest.approx(monitor.last[name]), name
    assert monitor.last["__prediction__"]["psi"] == pytest.approx(result.metrics["prediction_drift"])


def test_a_pinned_model_scores_without_a_champion(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.train(
        "sklearn://iris", "target", "sklearn.tree.DecisionTreeClassifier", {"metric": "accuracy", "min": 0.5}
    )
    model_ref = runs.outputs["train/train"]["model"]
    (tmp_path / "store" / "ns" / "train" / "champion.json").unlink()  # no champion to fall back on
    runs.run("scoring", "ingest", "ingest", {"source": "sklearn://iris"}, [])
    result = runs.run("scoring", "predict", "predict", {"model": {"uri": model_ref.uri}}, ["ingest"])
    model = load_model(runs.store.local_path(runs.store.key(model_ref.uri), tmp_path), model_ref.sha256)
    data = runs.table(runs.outputs["scoring/ingest"]["data"])
    scored = runs.table(result.outputs["predictions"])
    assert scored["prediction"].tolist() == model.predict(data[model_ref.meta["features"]]).tolist()
    # no run record (stages ran outside a run) and so no reference profile: no drift, said why
    drift = json.loads(runs.store.read_bytes(runs.store.key(result.outputs["drift"].uri)))
    assert drift["reference"] is None and "no reference profile" in drift["reason"]
    assert "drift_score" not in result.metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """One breast-cancer champion for the tests that only score (each as its own pipeline)."""
    runs = Runs(tmp_path_factory.mktemp("trained"))
    runs.train(
        "sklearn://breast_cancer",
        "target",
        "sklearn.linear_model.LogisticRegression",
        {"metric": "accuracy", "min": 0.9},
    )
    return runs


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"model": {"fromPipeline": "nope"}}, "pipeline 'nope' has no promoted model", id="no-champion"
        ),
        pytest.param(
            {"model": {"uri": "file:///elsewhere/ns/p/r/train/model.skops"}},
            "is not inside the store",
            id="uri-outside",
        ),
        pytest.param({"keep": ["nope"]}, "keep: column\\(s\\) 'nope' not in the input", id="keep-unknown"),
        pytest.param({"predictionColumn": "mean radius"}, "already in the kept input columns", id="clash"),
        pytest.param({"input": "test"}, "needs an input 'test'", id="no-such-input"),
    ],
)
def test_refusals_name_the_field(
    trained: Runs, options: dict[str, Any], message: str, request: pytest.FixtureRequest
) -> None:
    pipeline = f"scoring-{request.node.callspec.id}"
    with pytest.raises(StageError, match=message):
        trained.score("sklearn://breast_cancer", pipeline=pipeline, **options)
    assert trained.store.list(f"ns/{pipeline}/r1/predict") == []  # nothing committed


def test_a_pinned_version_scores_with_that_version(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    gate = {"metric": "accuracy", "min": 0.5}
    runs.train("sklearn://iris", "target", "sklearn.tree.DecisionTreeClassifier", gate)
    v1 = runs.outputs["train/train"]["model"]
    runs.run_name = "r2"
    runs.train("sklearn://iris", "target", "sklearn.ensemble.RandomForestClassifier", gate)
    champion = read_champion(runs.store, "ns", "train")
    assert champion is not None and champion.version == 2 and champion.model.sha256 != v1.sha256

    runs.run_name = "s1"
    result = runs.score("sklearn://iris", model={"fromPipeline": "train", "version": 1})
    meta = result.outputs["predictions"].meta
    assert (meta["modelSha256"], meta["modelRun"], meta["source"]) == (v1.sha256, "r1", "version 1 of train")
    model = load_model(runs.store.local_path(runs.store.key(v1.uri), tmp_path), v1.sha256)
    data = runs.table(runs.outputs["scoring/ingest"]["data"])
    scored = runs.table(result.outputs["predictions"])
    assert scored["prediction"].tolist() == model.predict(data[v1.meta["features"]]).tolist()

    runs.run_name = "s2"
    with pytest.raises(StageError, match=r"model\.version: pipeline 'train' has no version 3"):
        runs.score("sklearn://iris", model={"fromPipeline": "train", "version": 3})


def test_a_model_whose_digest_differs_from_its_record_is_refused(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.train(
        "sklearn://iris", "target", "sklearn.tree.DecisionTreeClassifier", {"metric": "accuracy", "min": 0.5}
    )
    record = tmp_path / "store" / "ns" / "train" / "champion.json"
    champion = json.loads(record.read_text())
    champion["model"]["sha256"] = "0" * 64  # the file is no longer the one recorded
    record.write_text(json.dumps(champion))
    with pytest.raises(StageError, match=r"cannot score with .* its SHA-256 is .*, expected 0000"):
        runs.score("sklearn://iris")
    assert runs.store.list("ns/scoring/r1/predict") == []


def test_a_batch_without_a_feature_column_is_refused(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    runs.train(
        str(PENGUINS), "species", "sklearn.tree.DecisionTreeClassifier", {"metric": "accuracy", "min": 0.5}
    )
    batch = pd.read_csv(PENGUINS).drop(columns=["species", "island"])
    path = tmp_path / "batch.csv"
    batch.to_csv(path, index=False)
    with pytest.raises(StageError, match="lacks the model's feature column\\(s\\) 'island'"):
        runs.score(str(path))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        pytest.param({}, "set exactly one of model.fromPipeline or model.uri", id="neither"),
        pytest.param({"fromPipeline": "a", "uri": "s3://b/m"}, "set exactly one", id="both"),
        pytest.param({"fromPipeline": "Not_A_Name"}, "should match pattern", id="bad-name"),
        pytest.param(
            {"uri": "s3://b/m", "version": 2},
            "model.version pins a version of model.fromPipeline",
            id="version-of-uri",
        ),
        pytest.param({"fromPipeline": "a", "version": 0}, "greater than or equal to 1", id="version-zero"),
    ],
)
def test_options_refuse_an_unclear_model(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PredictOptions.model_validate({"model": model})
