"""Facts outside a stage's inputs that its cache key must follow."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.api.pipeline import PipelineSpec
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
