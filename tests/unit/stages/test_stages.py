"""Built-in stages in-process, on small real data, with a local store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor.api.stages import EvaluateOptions
from conveyor.artifacts.layout import read_champion, write_champion
from conveyor.artifacts.models import UntrustedModel, load_model, save_model
from conveyor.artifacts.store import LocalStore
from conveyor.engine.invocation import ArtifactRef, StageInvocation
from conveyor.stages.context import StageContext, StageError
from conveyor.stages.evaluate import decide
from conveyor.stages.runner import execute
from tests.unit.artifacts.test_models import GADGETS, write_gadget


class Chain:
    """Runs stages one after another, feeding each the previous outputs."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = LocalStore(tmp_path / "store")
        self.outputs: dict[str, dict[str, ArtifactRef]] = {}

    def run(self, name: str, uses: str, options: dict[str, Any], deps: list[str], run: str = "r") -> Any:
        inv = StageInvocation(
            namespace="ns",
            pipeline="p",
            run=run,
            stage=name,
            uses=uses,
            options=options,
            inputs={d: self.outputs[d] for d in deps},
            store=self.store.root,
            output_prefix=self.store.uri(f"ns/p/{run}/{name}"),
        )
        result = execute(inv)
        self.outputs[name] = result.outputs
        return result


def csv_with_gaps(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame(
        {
            "size": rng.normal(10, 2, n),
            "color": rng.choice(["red", "green", None], n),
            "price": rng.normal(100, 10, n),
        }
    )
    df["price"] = df["price"] + 5 * df["size"]
    df.loc[::10, "price"] = np.nan  # missing targets
    df.loc[::7, "size"] = np.nan
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    return path


def test_ingest_csv_drops_missing_targets(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    res = chain.run("ingest", "ingest", {"source": str(csv_with_gaps(tmp_path)), "target": "price"}, [])
    assert res.metrics == {"dropped_missing_target": 20.0, "rows": 180.0, "columns": 3.0}
    assert res.outputs["data"].meta == {"target": "price"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"source": "sklearn://nope"}, "unknown dataset sklearn://nope"),
        ({"source": "/no/such.csv"}, "does not exist"),
        ({"source": "sklearn://iris", "target": "species"}, "target column 'species' is not in"),
        ({"source": "ftp://x/y"}, "unsupported source"),
    ],
)
def test_ingest_errors(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(StageError, match=message):
        Chain(tmp_path).run("ingest", "ingest", options, [])


def test_regression_chain_with_categoricals_and_gaps(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": str(csv_with_gaps(tmp_path)), "target": "price"}, [])
    chain.run("validate", "validate", {}, ["ingest"])
    prep = chain.run("transform", "transform", {}, ["validate"])
    assert prep.outputs["train"].meta["task"] == "regression"
    assert prep.metrics["features_out"] == 3  # size + one-hot(red, green)
    train = chain.run(
        "train",
        "train",
        {
            "estimator": "sklearn.linear_model.Ridge",
            "search": {"space": {"alpha": [0.1, 1.0]}, "cv": 3},
        },
        ["transform"],
    )
    assert train.metrics["candidates"] == 2
    ev = chain.run("evaluate", "evaluate", {"gate": {"metric": "r2", "min": 0.1}}, ["train"])
    assert set(ev.metrics) >= {"rmse", "mae", "r2"} and ev.metrics["promoted"] == 1.0
    champ = read_champion(chain.store, "ns", "p")
    assert champ is not None and champ.model == ev.outputs["model"]
    model = load_model(chain.store.local_path("ns/p/r/train/model.skops", tmp_path), champ.model.sha256)
    assert [name for name, _ in model.steps] == ["preprocess", "model"]


def test_validate_reports_every_violation(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": "sklearn://iris"}, [])
    expectations = {
        "minRows": 1000,
        "columns": {
            "sepal length (cm)": {"max": 5},
            "petal color": {"dtype": "string"},
            "target": {"allowed": [0, 1]},
        },
    }
    with pytest.raises(StageError) as err:
        chain.run("validate", "validate", {"expectations": expectations}, ["ingest"])
    text = str(err.value)
    assert "4 violation(s)" in text
    assert "150 rows, expected at least 1000" in text
    assert "column 'sepal length (cm)'" in text and "above max 5" in text
    assert "column 'petal color' is missing" in text
    assert "categories outside the allowed set: 2" in text
    assert chain.store.list("ns/p/r/validate") == []  # nothing committed


def test_train_rejects_bad_params(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": "sklearn://iris"}, [])
    chain.run("transform", "transform", {}, ["ingest"])
    with pytest.raises(StageError, match="invalid params"):
        chain.run(
            "train",
            "train",
            {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"nope": 1}},
            ["transform"],
        )
    with pytest.raises(StageError, match="not a scikit-learn estimator"):
        chain.run("train", "train", {"estimator": "sklearn.linear_model.ridge_regression"}, ["transform"])


@pytest.mark.parametrize(
    ("gate", "compare", "value", "champion", "passed", "why"),
    [
        ({"metric": "accuracy", "min": 0.9}, None, 0.95, None, True, "passes the gate"),
        ({"metric": "accuracy", "min": 0.9}, None, 0.85, None, False, "accuracy 0.8500 < min 0.9"),
        ({"metric": "rmse", "max": 10}, None, 12, None, False, "rmse 12.0000 > max 10"),
        ({"metric": "accuracy", "min": 0.9}, "champion", 0.95, 0.96, False, "does not beat"),
        ({"metric": "accuracy", "min": 0.9}, "champion", 0.97, 0.96, True, "beats the champion"),
        ({"metric": "rmse", "max": 10}, "champion", 5, 6, True, "beats the champion"),
        ({"metric": "rmse", "max": 10}, "champion", 7, 6, False, "does not beat"),
    ],
)
def test_gate_decisions(
    gate: dict[str, Any],
    compare: str | None,
    value: float,
    champion: float | None,
    passed: bool,
    why: str,
) -> None:
    opts = EvaluateOptions.model_validate({"gate": gate, "compareTo": compare})
    task = "regression" if gate["metric"] == "rmse" else "classification"
    ok, reason = decide(opts, {gate["metric"]: value}, task, champion)
    assert ok is passed and why in reason


def test_gate_on_an_unmeasured_metric_is_an_error() -> None:
    opts = EvaluateOptions.model_validate({"gate": {"metric": "r2", "min": 0.5}})
    with pytest.raises(StageError, match="not measured for classification"):
        decide(opts, {"accuracy": 1.0}, "classification", None)


def test_model_loading_refuses_untrusted_types(tmp_path: Path) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "evil.skops"
    save_model(make_pipeline(FunctionTransformer(os.system)), path)
    with pytest.raises(UntrustedModel, match=r"posix\.system|os\.system"):
        load_model(path, hashlib.sha256(path.read_bytes()).hexdigest())


def _gadget_champion(tmp_path: Path, gadget: str) -> tuple[Chain, str]:
    """A classification chain up to train, and a champion.json pointing at a refused file."""
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": "sklearn://iris"}, [])
    chain.run("transform", "transform", {}, ["ingest"])
    # the champion: an earlier run's model, another one (the same bytes would be "already the
    # champion", never loaded); this run's own model stays intact
    stump = {"estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 1}}
    old = chain.run("train", "train", stump, ["transform"], run="old").outputs["model"]
    chain.run("train", "train", {"estimator": "sklearn.tree.DecisionTreeClassifier"}, ["transform"])
    chain.run("evaluate", "evaluate", {"gate": {"metric": "accuracy", "min": 0.1}}, ["train"])
    champ = read_champion(chain.store, "ns", "p")
    assert champ is not None and champ.model.sha256 != old.sha256
    path = tmp_path / "store/ns/p/old/train/model.skops"
    if gadget == "digest-mismatch":
        path.write_bytes(path.read_bytes() + b"\0")
        expected = old.sha256
    else:
        expected = write_gadget(gadget, path)
        # the attacker rewrites the digest too: only the type check stands in the way
        old = old.model_copy(update={"sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    write_champion(chain.store, "ns", "p", champ.model_copy(update={"model": old, "run": "old"}))
    return chain, expected


@pytest.mark.parametrize("gadget", [*sorted(GADGETS), "digest-mismatch"])
def test_evaluate_refuses_a_gadget_champion(tmp_path: Path, gadget: str) -> None:
    chain, expected = _gadget_champion(tmp_path, gadget)
    with pytest.raises(StageError) as err:
        chain.run(
            "evaluate2",
            "evaluate",
            {"gate": {"metric": "accuracy", "min": 0.1}, "compareTo": "champion"},
            ["train"],
        )
    text = str(err.value)
    assert "the champion" in text and "was refused" in text and "model.skops" in text and expected in text


def test_evaluate_refuses_a_tampered_model_input(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": "sklearn://iris"}, [])
    chain.run("transform", "transform", {}, ["ingest"])
    chain.run("train", "train", {"estimator": "sklearn.tree.DecisionTreeClassifier"}, ["transform"])
    path = tmp_path / "store" / "ns" / "p" / "r" / "train" / "model.skops"
    write_gadget("numpy-function", path)
    with pytest.raises(StageError, match=r"model\.skops: its SHA-256 is .* expected"):
        chain.run("evaluate", "evaluate", {}, ["train"])


def test_context_input_errors_name_what_is_available(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    inv = StageInvocation(
        namespace="n",
        pipeline="p",
        run="r",
        stage="train",
        uses="train",
        store=store.root,
        output_prefix=store.uri("n/p/r/train"),
        inputs={"prep": {"test": ArtifactRef(uri="file:///x", sha256="0", bytes=0)}},
    )
    ctx = StageContext(inv)
    with pytest.raises(StageError, match=r"needs an input 'train'.*provide: test"):
        ctx.input_ref("train")
    ctx.close()


def test_ingest_parquet_and_s3_sources(tmp_path: Path, bucket: str) -> None:
    from conveyor.artifacts.store import S3Store

    df = pd.read_csv(csv_with_gaps(tmp_path))
    parquet = tmp_path / "data.parquet"
    df.to_parquet(parquet)
    res = Chain(tmp_path / "a").run("ingest", "ingest", {"source": str(parquet), "target": "price"}, [])
    assert res.metrics["rows"] == 180
    S3Store(bucket).write_file("raw/data.csv", csv_with_gaps(tmp_path), "text/csv")
    res = Chain(tmp_path / "b").run(
        "ingest",
        "ingest",
        {"source": f"s3://{bucket}/raw/data.csv", "target": "price", "columns": ["size"]},
        [],
    )
    assert res.metrics == {"dropped_missing_target": 20.0, "rows": 180.0, "columns": 2.0}


def _custom_table(chain: Chain, tmp_path: Path, meta: dict[str, Any]) -> None:
    """A custom stage's `data` output, as its outputs.json would name it."""
    path = tmp_path / "custom.parquet"
    frame = pd.DataFrame({"x": np.arange(40.0), "y": [0, 1] * 20})
    frame.to_parquet(path)
    ref = chain.store.write_file("ns/p/r/custom/data.parquet", path, "application/vnd.apache.parquet")
    chain.outputs["custom"] = {"data": ref.model_copy(update={"meta": meta})}


def test_transform_after_a_custom_stage_names_that_stage_and_every_fix(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    _custom_table(chain, tmp_path, {})
    with pytest.raises(StageError) as err:
        chain.run("transform", "transform", {}, ["custom"])
    message = str(err.value)
    assert "stage 'custom' names no target column" in message  # it blamed "the ingest stage"
    assert "with: {target: <column>}" in message and '"meta": {"target"' in message


def test_transform_takes_its_target_option_or_the_custom_stages_meta(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    _custom_table(chain, tmp_path, {})
    chain.run("transform", "transform", {"target": "y"}, ["custom"])
    assert chain.outputs["transform"]["train"].meta["target"] == "y"
    _custom_table(chain, tmp_path, {"target": "y"})
    chain.run("transform2", "transform", {}, ["custom"])
    assert chain.outputs["transform2"]["train"].meta["features"] == ["x"]
    with pytest.raises(StageError, match="target 'nope' is not a column of the data from stage 'custom'"):
        _custom_table(chain, tmp_path, {})
        chain.run("transform3", "transform", {"target": "nope"}, ["custom"])
