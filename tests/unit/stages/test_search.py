"""Hyperparameter search in the train stage: bayes (Optuna TPE) next to grid and random."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.api.stages import ParamRange, SearchOptions
from conveyor.artifacts.store import LocalStore
from conveyor.engine.invocation import ArtifactRef, StageInvocation
from conveyor.stages.context import StageError
from conveyor.stages.runner import execute
from conveyor.stages.search import choices, decode

LOGISTIC = "sklearn.linear_model.LogisticRegression"


class Train:
    """ingest -> transform of one dataset, then train stages with any options (runs r1, r2...)."""

    def __init__(self, tmp_path: Path, source: str) -> None:
        self.store = LocalStore(tmp_path / "store")
        self.outputs: dict[str, dict[str, ArtifactRef]] = {}
        self.count = 0
        self._run("ingest", "ingest", {"source": source}, [])
        self._run("transform", "transform", {"randomState": 7}, ["ingest"])

    def _run(self, name: str, uses: str, options: dict[str, Any], deps: list[str]) -> Any:
        self.count += 1
        inv = StageInvocation(
            namespace="ns",
            pipeline="p",
            run=f"r{self.count}",
            stage=name,
            uses=uses,
            options=options,
            inputs={d: self.outputs[d] for d in deps},
            store=self.store.root,
            output_prefix=self.store.uri(f"ns/p/r{self.count}/{name}"),
        )
        result = execute(inv)
        self.outputs[name] = result.outputs
        return result

    def train(self, search: dict[str, Any], **params: Any) -> tuple[Any, dict[str, Any]]:
        result = self._run(
            "train", "train", {"estimator": LOGISTIC, "params": params, "search": search}, ["transform"]
        )
        record = json.loads(self.store.read_bytes(self.store.key(result.outputs["search"].uri)))
        return result, record


BAYES = {"type": "bayes", "cv": 3, "nTrials": 8, "space": {"C": {"low": 0.001, "high": 100, "log": True}}}


def test_the_same_seed_gives_the_same_best_params(tmp_path: Path) -> None:
    t = Train(tmp_path, "sklearn://breast_cancer")
    first, one = t.train({**BAYES, "seed": 3}, max_iter=3000)
    second, two = t.train({**BAYES, "seed": 3}, max_iter=3000)
    _, three = t.train({**BAYES, "seed": 4}, max_iter=3000)
    assert one == two  # best params, best score
    assert first.metrics == second.metrics
    assert three["best_params"] != one["best_params"]  # the seed drives the trials
    assert one["type"] == "bayes" and one["seed"] == 3 and one["n_trials"] == 8
    assert first.metrics["candidates"] == 8.0
    assert first.metrics["cv_best_score"] == one["best_score"]
    assert 0.001 <= one["best_params"]["C"] <= 100


def test_the_recorded_score_is_the_cv_score_of_the_refit_model(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.model_selection import cross_val_score

    from conveyor.artifacts.models import load_model

    t = Train(tmp_path, "sklearn://breast_cancer")
    result, record = t.train({**BAYES, "scoring": "accuracy"}, max_iter=3000)
    ref = result.outputs["model"]
    model = load_model(t.store.local_path(t.store.key(ref.uri), tmp_path), ref.sha256)
    assert record["best_params"]["C"] == model.named_steps["model"].C  # refit with the best params
    train = pd.read_parquet(t.store.local_path(t.store.key(t.outputs["transform"]["train"].uri), tmp_path))
    x, y = train.drop(columns=["target"]), train["target"]
    again = cross_val_score(model, x, y, cv=3, scoring="accuracy").mean()  # what GridSearchCV would do
    assert again == pytest.approx(record["best_score"])


def test_lists_are_choices(tmp_path: Path) -> None:
    t = Train(tmp_path, "sklearn://iris")
    space = {"C": [0.01, 1.0, 100.0], "fit_intercept": [True, False]}
    result, record = t.train({"type": "bayes", "cv": 3, "nTrials": 5, "space": space}, max_iter=2000)
    assert record["best_params"]["C"] in space["C"]
    assert record["best_params"]["fit_intercept"] in space["fit_intercept"]
    assert result.metrics["candidates"] == 5.0


def test_random_search_samples_ranges(tmp_path: Path) -> None:
    t = Train(tmp_path, "sklearn://iris")
    space = {"C": {"low": 0.01, "high": 10, "log": True}}
    result, record = t.train({"type": "random", "cv": 3, "nIter": 4, "space": space}, max_iter=2000)
    assert result.metrics["candidates"] == 4.0
    assert 0.01 <= record["best_params"]["C"] <= 10 and record["best_params"]["C"] not in (0.01, 10)


@pytest.mark.parametrize(
    ("search", "message"),
    [
        pytest.param(
            {"space": {"penalty": ["nope"]}},
            "all 3 trials failed; the last: .*penalty",
            id="every-trial-fails",
        ),
        pytest.param(
            {"space": {"nope": [1, 2]}}, "search space: Invalid parameter 'nope'", id="unknown-param"
        ),
    ],
)
def test_a_search_that_cannot_succeed_fails_the_stage(
    tmp_path: Path, search: dict[str, Any], message: str
) -> None:
    t = Train(tmp_path, "sklearn://iris")
    with pytest.raises(StageError, match=message):
        t.train({"type": "bayes", "cv": 3, "nTrials": 3, **search})


@pytest.mark.parametrize(
    ("search", "message"),
    [
        pytest.param(
            {"space": {"C": {"low": 1, "high": 2}}}, "space.C: grid search takes a list", id="grid-range"
        ),
        pytest.param(
            {"type": "random", "space": {"n": {"low": 1, "high": 9, "log": True, "type": "int"}}},
            "random search samples log ranges of floats only",
            id="random-log-int",
        ),
        pytest.param(
            {"type": "random", "nTrials": 5, "space": {"C": [1]}},
            "nTrials and seed are options of type: bayes",
            id="random-ntrials",
        ),
        pytest.param(
            {"space": {"C": [1]}, "seed": 1}, "grid search takes nIter and randomState", id="grid-seed"
        ),
        pytest.param({"type": "bayes", "space": {"C": []}}, "space.C is empty", id="empty-list"),
        pytest.param({"type": "bayes", "space": {"C": {"low": 2, "high": 1}}}, "low < high", id="reversed"),
        pytest.param(
            {"type": "bayes", "space": {"C": {"low": 0, "high": 1, "log": True}}},
            "needs low > 0",
            id="log-zero",
        ),
        pytest.param(
            {"type": "bayes", "space": {"n": {"low": 1.5, "high": 4, "type": "int"}}},
            "whole-number",
            id="int-fraction",
        ),
        pytest.param(
            {"type": "bayes", "nTrials": 0, "space": {"C": [1]}}, "greater than or equal to 1", id="no-trials"
        ),
        pytest.param(
            {"type": "optuna", "space": {"C": [1]}}, "'grid', 'random' or 'bayes'", id="unknown-type"
        ),
    ],
)
def test_search_options_refuse(search: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SearchOptions.model_validate(search)


def test_bayes_options_parse() -> None:
    s = SearchOptions.model_validate(
        {
            "type": "bayes",
            "nTrials": 30,
            "seed": 7,
            "space": {"C": {"low": 0.1, "high": 10, "log": True}, "k": [1, 2]},
        }
    )
    assert (s.n_trials, s.seed) == (30, 7)
    assert s.space == {"C": ParamRange(low=0.1, high=10, log=True), "k": [1, 2]}


@pytest.mark.parametrize(
    ("values", "labels", "chosen", "decoded"),
    [
        pytest.param(
            [0.1, 1, "auto", None, True], [0.1, 1, "auto", None, True], "auto", "auto", id="scalars"
        ),
        pytest.param([[5], [10, 5]], ["[5]", "[10, 5]"], "[10, 5]", [10, 5], id="lists-as-json"),
        pytest.param([{"a": 1}, 2], ['{"a": 1}', "2"], '{"a": 1}', {"a": 1}, id="mixed"),
    ],
)
def test_choices_round_trip(values: list[Any], labels: list[Any], chosen: Any, decoded: Any) -> None:
    assert choices(values) == labels
    assert decode({"p": chosen}, {"p": values}) == {"p": decoded}
