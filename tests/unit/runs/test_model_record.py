"""Which model a run record names, and whether it says `promoted`: with two parallel
train/evaluate branches, with decisions reused from the cache, and the hyperparameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.api.pipeline import PipelineSpec
from conveyor.artifacts import layout
from conveyor.artifacts.layout import StageResult
from conveyor.artifacts.store import LocalStore
from conveyor.engine.invocation import ArtifactRef
from conveyor.runs.context import RunContext, model_record

BRANCHES = PipelineSpec.model_validate(
    {
        "stages": [
            {"name": "transform", "uses": "transform"},
            *(
                {
                    "name": f"train-{b}",
                    "uses": "train",
                    "dependsOn": ["transform"],
                    "with": {
                        "estimator": "sklearn.linear_model.LogisticRegression",
                        "params": {"max_iter": 500},
                    },
                }
                for b in "ab"
            ),
            *({"name": f"evaluate-{b}", "uses": "evaluate", "dependsOn": [f"train-{b}"]} for b in "ab"),
        ]
    }
)


def _model(store: LocalStore, branch: str) -> ArtifactRef:
    return store.write_bytes(f"ns/p/r/train-{branch}/model.skops", branch.encode(), "application/x-skops")


def _evaluated(store: LocalStore, branch: str, reused: str | None = None, **decision: Any) -> StageResult:
    ref = store.write_bytes(f"ns/p/r/evaluate-{branch}/decision.json", json.dumps(decision).encode(), "x")
    metrics = {"accuracy": 0.9 if branch == "a" else 0.95, "promoted": float(bool(decision.get("promoted")))}
    return StageResult(
        outputs={"model": _model(store, branch), "decision": ref}, metrics=metrics, reused_from=reused
    )


def _promoted(version: int | None) -> dict[str, Any]:
    if version is None:
        return {"promoted": False, "passed": False, "reason": "does not beat the champion", "version": None}
    return {"promoted": True, "passed": True, "reason": f"promoted as version {version}", "version": version}


@pytest.mark.parametrize(
    ("a", "b", "named", "promoted", "version"),
    [
        pytest.param(3, 4, "b", True, 4, id="a-then-b-promoted: b is the champion the run left"),
        pytest.param(4, 3, "a", True, 4, id="b-then-a-promoted: a is"),
        pytest.param(None, 5, "b", True, 5, id="only-b-promoted: b, though a comes first"),
        pytest.param(5, None, "a", True, 5, id="only-a-promoted"),
        pytest.param(None, None, "a", False, None, id="neither: the first evaluated model, not promoted"),
    ],
)
def test_parallel_branches_name_the_model_promoted_last(
    tmp_path: Path, a: int | None, b: int | None, named: str, promoted: bool, version: int | None
) -> None:
    store = LocalStore(tmp_path)
    results = [
        ("evaluate-a", _evaluated(store, "a", **_promoted(a))),
        ("evaluate-b", _evaluated(store, "b", **_promoted(b))),
    ]
    record = model_record(store, results)
    assert record is not None
    assert (record.uri, record.promoted, record.version, record.stage) == (
        store.uri(f"ns/p/r/train-{named}/model.skops"),
        promoted,
        version,
        f"evaluate-{named}",
    )
    assert "promoted" not in record.metrics


@pytest.mark.parametrize("reused", ["cache", "run:earlier"])
def test_a_reused_promotion_promoted_nothing_in_this_run(tmp_path: Path, reused: str) -> None:
    store = LocalStore(tmp_path)
    record = model_record(store, [("evaluate-a", _evaluated(store, "a", reused, **_promoted(2)))])
    assert record is not None and record.promoted is False and record.version == 2
    assert "this run promoted nothing" in record.decision


def test_without_evaluate_the_last_model_is_named(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    results = [(f"train-{b}", StageResult(outputs={"model": _model(store, b)})) for b in "ab"]
    record = model_record(store, results)
    assert (
        record is not None
        and record.uri.endswith("train-b/model.skops")
        and record.decision == "not evaluated"
    )


def test_hyperparameters_are_the_params_overridden_by_the_search(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ctx = RunContext(BRANCHES, "p", "ns", "r", store, version="v")
    search = store.write_bytes(
        "ns/p/r/train-b/search.json", json.dumps({"best_params": {"C": 0.1, "penalty": "l2"}}).encode(), "x"
    )
    results = {
        "train-a": StageResult(outputs={"model": _model(store, "a")}),
        "train-b": StageResult(outputs={"model": _model(store, "b"), "search": search}),
        "evaluate-a": _evaluated(store, "a", **_promoted(None)),
        "evaluate-b": _evaluated(store, "b", **_promoted(1)),
    }
    record = ctx.model_record(results)
    assert record is not None and record.stage == "evaluate-b"
    assert record.hyperparameters == {"C": "0.1", "max_iter": "500", "penalty": "l2"}


def test_a_cached_promotion_is_not_reused_once_its_model_is_no_longer_champion(tmp_path: Path) -> None:
    """A promotion is a side effect a cache pointer cannot replay: if champion.json no longer
    names the cached decision's model (it was deleted to start afresh), evaluate runs again."""
    from datetime import UTC, datetime

    from conveyor.artifacts.layout import Champion

    store = LocalStore(tmp_path)
    spec = PipelineSpec.model_validate({"stages": [{"name": "evaluate", "uses": "evaluate"}]})
    ctx = RunContext(spec, "p", "ns", "r2", store, version="v")
    stage = spec.stage("evaluate")
    inv = ctx.invocation(stage, {})
    hit = _evaluated(store, "a", **_promoted(1))
    layout.cache_record(store, inv.cache_key, hit)
    assert ctx.cache_hit(stage, inv) is None  # no champion at all
    champ = Champion(run="r1", model=hit.outputs["model"], promoted_at=datetime.now(UTC))
    layout.write_champion(store, "ns", "p", champ)
    found = ctx.cache_hit(stage, inv)
    assert found is not None and found.outputs["model"] == hit.outputs["model"]
