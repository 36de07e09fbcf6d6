"""The evaluate stage's gate with several conditions, and promotion decided against the
champion current at commit time (a compare-and-swap), in-process on a local store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor.api.stages import EvaluateOptions
from conveyor.artifacts import champion as champions
from conveyor.artifacts.layout import Champion
from conveyor.stages.evaluate import decide
from tests.unit.stages.test_stages import Chain

BOTH = [{"metric": "accuracy", "min": 0.9}, {"metric": "roc_auc", "min": 0.95}]


@pytest.mark.parametrize(
    ("gate", "compare", "metrics", "champion", "passed", "why"),
    [
        pytest.param(BOTH, None, {"accuracy": 0.93, "roc_auc": 0.97}, None, True,
                     "accuracy 0.9300 and roc_auc 0.9700 pass the gate", id="both-hold"),
        pytest.param(BOTH, None, {"accuracy": 0.93, "roc_auc": 0.94}, None, False,
                     "roc_auc 0.9400 < min 0.95", id="second-fails"),
        pytest.param(BOTH, None, {"accuracy": 0.8, "roc_auc": 0.94}, None, False,
                     "accuracy 0.8000 < min 0.9; roc_auc 0.9400 < min 0.95", id="both-fail-both-named"),
        pytest.param(BOTH, "champion", {"accuracy": 0.93, "roc_auc": 0.99}, 0.94, False,
                     "accuracy 0.9300 does not beat the champion's 0.9400", id="compared-on-first-metric"),
        pytest.param(BOTH, "champion", {"accuracy": 0.95, "roc_auc": 0.96}, 0.94, True,
                     "beats the champion's 0.9400", id="beats-on-first-metric"),
        pytest.param([{"metric": "rmse", "max": 10}, {"metric": "r2", "min": 0.5}], None,
                     {"rmse": 5, "r2": 0.4}, None, False, "r2 0.4000 < min 0.5", id="regression"),
        pytest.param({"metric": "accuracy", "min": 0.9}, None, {"accuracy": 0.95}, None, True,
                     "accuracy 0.9500 passes the gate", id="single-form"),
    ],
)  # fmt: skip
def test_gate_conditions(
    gate: Any, compare: str | None, metrics: dict[str, float], champion: float | None, passed: bool, why: str
) -> None:
    opts = EvaluateOptions.model_validate({"gate": gate, "compareTo": compare})
    task = "regression" if "rmse" in metrics else "classification"
    ok, reason = decide(opts, metrics, task, champion)
    assert ok is passed and why in reason


def _two_models(tmp_path: Path) -> Chain:
    """iris up to two trained trees: `weak` (depth 1) and `strong` (depth 4)."""
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": "sklearn://iris"}, [])
    chain.run("transform", "transform", {"randomState": 1}, ["ingest"])
    for name, depth in (("weak", 1), ("strong", 4)):
        options = {"estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": depth}}
        chain.run(name, "train", options, ["transform"])
    return chain


WHEN = datetime(2024, 1, 1, tzinfo=UTC)
GATE = {"gate": {"metric": "accuracy", "min": 0.1}, "compareTo": "champion"}


def _decision(chain: Chain, stage: str) -> dict[str, Any]:
    return dict(json.loads(chain.store.read_bytes(chain.store.key(chain.outputs[stage]["decision"].uri))))


def test_a_better_model_promoted_while_deciding_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The weak model reads no champion, decides to promote; meanwhile another run promotes the
    strong one. The weak model's swap finds the champion changed, it decides again against the
    strong one, loses, and records promoted: false. Without the compare-and-swap the weak model
    overwrote the strong one (the bug this guards)."""
    chain = _two_models(tmp_path)
    strong = chain.outputs["strong"]["model"]
    real_current = champions.current
    calls = 0

    def current_then_someone_promotes(store: Any, ns: str, p: str) -> champions.ChampionState:
        nonlocal calls
        calls += 1
        state = real_current(store, ns, p)
        if calls == 1:  # right after this stage read the champion
            other = Champion(run="other", model=strong, metrics={"accuracy": 0.99}, promoted_at=WHEN)
            assert champions.promote(store, ns, p, state, other)
        return state

    monkeypatch.setattr(champions, "current", current_then_someone_promotes)
    result = chain.run("evaluate-weak", "evaluate", GATE, ["weak"])
    decision = _decision(chain, "evaluate-weak")
    assert calls == 2  # read, lost the swap, read again
    assert decision["promoted"] is False and decision["passed"] is False
    assert "does not beat the champion's" in decision["reason"]
    assert result.metrics["promoted"] == 0.0
    versions = champions.list_versions(chain.store, "ns", "p")
    assert [(v.version, v.run, v.model.uri) for v in versions] == [(1, "other", strong.uri)]


def test_a_worse_model_promoted_while_deciding_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mirror: the strong model decides against no champion, the weak one lands first; the
    strong one decides again against it, beats it and becomes version 2."""
    chain = _two_models(tmp_path)
    weak = chain.outputs["weak"]["model"]
    real_current = champions.current
    calls = 0

    def current_then_someone_promotes(store: Any, ns: str, p: str) -> champions.ChampionState:
        nonlocal calls
        calls += 1
        state = real_current(store, ns, p)
        if calls == 1:
            other = Champion(run="other", model=weak, metrics={"accuracy": 0.6}, promoted_at=WHEN)
            assert champions.promote(store, ns, p, state, other)
        return state

    monkeypatch.setattr(champions, "current", current_then_someone_promotes)
    chain.run("evaluate-strong", "evaluate", GATE, ["strong"])
    decision = _decision(chain, "evaluate-strong")
    assert decision["promoted"] is True and decision["version"] == 2
    assert "beats the champion's" in decision["reason"] and "promoted as version 2" in decision["reason"]
    versions = champions.list_versions(chain.store, "ns", "p")
    assert [(v.version, v.run, v.stage) for v in versions] == [(1, "other", ""), (2, "r", "evaluate-strong")]


def test_a_retried_stage_whose_model_is_already_champion_makes_no_new_version(tmp_path: Path) -> None:
    chain = _two_models(tmp_path)
    chain.run("evaluate", "evaluate", GATE, ["strong"])
    chain.run("evaluate", "evaluate", GATE, ["strong"])  # the same stage of the same run, again
    decision = _decision(chain, "evaluate")
    assert decision["promoted"] is True and decision["version"] == 1
    assert "already the champion (version 1, run r)" in decision["reason"]
    assert [v.version for v in champions.list_versions(chain.store, "ns", "p")] == [1]


def test_the_same_model_trained_again_by_another_run_is_already_the_champion(tmp_path: Path) -> None:
    """Trained again from the same data and options, a model is the same file byte for byte
    (its skops archive is canonical), so a second run (`--no-cache`, say) finds it champion
    already: no second version of an identical model. Before, the bytes differed with the
    clock and memory addresses, and the same model was compared with itself and promoted."""
    chain = _two_models(tmp_path)
    tree = {"estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 4, "random_state": 0}}
    chain.run("train", "train", tree, ["transform"])
    chain.run("evaluate", "evaluate", GATE, ["train"])
    chain.run("train", "train", tree, ["transform"], run="again")
    assert chain.outputs["train"]["model"].uri.endswith("/again/train/model.skops")
    chain.run("evaluate", "evaluate", GATE, ["train"], run="again")
    decision = _decision(chain, "evaluate")
    assert decision["promoted"] is False and decision["version"] == 1
    assert "already the champion (version 1, run r)" in decision["reason"]
    assert [v.run for v in champions.list_versions(chain.store, "ns", "p")] == ["r"]
