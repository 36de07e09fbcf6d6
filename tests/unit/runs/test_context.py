"""Facts outside a stage's inputs that its cache key must follow, and cached results reused
only with the side effects they stand for."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.stages import Expectations
from conveyor.artifacts import expectations as learned
from conveyor.artifacts import layout
from conveyor.artifacts.store import LocalStore
from conveyor.runs.context import RunContext


def _spec(model: dict[str, object]) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "stages": [
                {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://breast_cancer"}},
                {"name": "predict", "uses": "predict", "dependsOn": ["ingest"], "with": {"model": model}},
            ]
        }
    )


def _crown(store: LocalStore, content: bytes) -> None:
    ref = store.write_bytes(f"ns/bc/r-{content.decode()}/train/model.skops", content, "application/x-skops")
    champion = layout.Champion(run=f"r-{content.decode()}", model=ref, promoted_at=datetime.now(UTC))
    layout.write_champion(store, "ns", "bc", champion)


def _predict_key(ctx: RunContext) -> str:
    stage = ctx.spec.stages[1]
    ingest = layout.StageResult(outputs={}, metrics={})
    return ctx.invocation(stage, {"ingest": ingest}).cache_key


@pytest.mark.parametrize(
    ("model", "follows"),
    [
        pytest.param({"fromPipeline": "bc"}, True, id="the-champion-follows-promotions"),
        pytest.param({"fromPipeline": "bc", "version": 1}, False, id="a-pinned-version-does-not"),
    ],
)
def test_scoring_the_champion_is_new_work_after_a_promotion(
    tmp_path: Path, model: dict[str, object], follows: bool
) -> None:
    store = LocalStore(tmp_path)
    ctx = RunContext(_spec(model), "scoring", "ns", "run-1", store)
    _crown(store, b"a")
    before = _predict_key(ctx)
    assert _predict_key(ctx) == before  # nothing changed: the same key
    _crown(store, b"b")
    assert (_predict_key(ctx) != before) is follows


LEARNING = PipelineSpec.model_validate(
    {
        "stages": [
            {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
            {"name": "validate", "uses": "validate", "dependsOn": ["ingest"]},
        ]
    }
)
LEARNED = Expectations(min_rows=10)


def _validated_by(store: LocalStore, pipeline: str) -> str:
    """Pipeline `pipeline` learned LEARNED and validated with it: its result is in the cache.
    The cache key, the same for every pipeline validating the same data."""
    ctx = RunContext(LEARNING, pipeline, "ns", "r1", store)
    inv = ctx.invocation(LEARNING.stages[1], {"ingest": layout.StageResult()})
    ref = store.write_bytes(f"ns/{pipeline}/r1/validate/expectations.json", learned.canonical(LEARNED), "x")
    layout.cache_record(store, inv.cache_key, layout.StageResult(outputs={"expectations": ref}))
    assert learned.keep(store, "ns", pipeline, "validate", LEARNED)
    return inv.cache_key


def _hit(store: LocalStore, pipeline: str) -> layout.StageResult | None:
    ctx = RunContext(LEARNING, pipeline, "ns", "r2", store)
    inv = ctx.invocation(LEARNING.stages[1], {"ingest": layout.StageResult()})
    return ctx.cache_hit(LEARNING.stages[1], inv)


@pytest.mark.parametrize(
    ("change", "reused", "kept"),
    [
        pytest.param(None, True, LEARNED, id="the-expectations-it-checked-against-are-kept"),
        pytest.param(Expectations(min_rows=100), False, Expectations(min_rows=100), id="edited-since"),
        pytest.param("deleted", True, LEARNED, id="deleted-since: kept again, as running would"),
        pytest.param("corrupt", False, "corrupt", id="corrupt: the stage runs and says so"),
    ],
)
def test_a_learning_validation_is_reused_only_with_the_expectations_it_checked(
    tmp_path: Path, change: Expectations | str | None, reused: bool, kept: Expectations | str
) -> None:
    store = LocalStore(tmp_path)
    _validated_by(store, "p")
    where = tmp_path / learned.key("ns", "p", "validate")
    if isinstance(change, Expectations):
        where.write_bytes(learned.canonical(change))
    elif change == "deleted":
        where.unlink()
    elif change == "corrupt":
        where.write_text("{")
    assert (_hit(store, "p") is not None) is reused
    if kept == "corrupt":
        with pytest.raises(learned.CorruptExpectations, match=f"{where}.*delete it"):
            learned.read(store, "ns", "p", "validate")
    else:
        assert learned.read(store, "ns", "p", "validate") == kept


def test_another_pipelines_validation_of_the_same_data_gives_this_one_its_expectations(
    tmp_path: Path,
) -> None:
    """The bug: the hit was taken and nothing kept, so the pipeline's next run learned its
    expectations from whatever data came, corrupted or not."""
    store = LocalStore(tmp_path)
    _validated_by(store, "first")
    assert learned.read(store, "ns", "second", "validate") is None
    assert _hit(store, "second") is not None
    assert learned.read(store, "ns", "second", "validate") == LEARNED
