"""Where things live in a store, and the records kept there (DESIGN.md, "Artifacts").

<ns>/<pipeline>/<run>/<stage>/outputs.json   committed last: a stage without it has no
<ns>/<pipeline>/<run>/<stage>/metrics.json   visible outputs, whatever else was written
<ns>/<pipeline>/<run>/run.json               lineage
<ns>/<pipeline>/champion.json                the promoted model
cache/<cache key>.json                       pointer to a reusable stage result
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from conveyor.api.pipelinerun import ModelRecord, StageStatus
from conveyor.artifacts.store import Store, StoreError
from conveyor.engine.invocation import ArtifactRef

JSON = "application/json"


class StageResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outputs: dict[str, ArtifactRef] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    cache_key: str = ""
    reused_from: str | None = Field(default=None, description="cache | run:<name>")


class Champion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run: str
    model: ArtifactRef
    profile: ArtifactRef | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    promoted_at: datetime


class RunRecord(BaseModel):
    """Lineage of one run: enough to say what produced a model from what."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    namespace: str
    pipeline: str
    run: str
    phase: str
    message: str = ""
    spec_digest: str
    params: dict[str, str]
    version: str
    start_time: datetime
    completion_time: datetime | None = None
    stages: list[StageStatus] = Field(default_factory=list)
    artifacts: dict[str, dict[str, ArtifactRef]] = Field(default_factory=dict)
    model: ModelRecord | None = None
    resumed_from: str | None = None


def run_prefix(namespace: str, pipeline: str, run: str) -> str:
    return f"{namespace}/{pipeline}/{run}"


def stage_prefix(namespace: str, pipeline: str, run: str, stage: str) -> str:
    return f"{run_prefix(namespace, pipeline, run)}/{stage}"


def _write_json(store: Store, key: str, value: Any) -> ArtifactRef:
    return store.write_bytes(key, json.dumps(value, indent=2, sort_keys=True, default=str).encode(), JSON)


def _read_json(store: Store, key: str) -> Any | None:
    try:
        return json.loads(store.read_bytes(key))
    except StoreError:
        return None


def commit_result(store: Store, prefix: str, result: StageResult) -> None:
    """Metrics first, outputs.json last: its presence is what commits the stage."""
    _write_json(store, f"{prefix}/metrics.json", result.metrics)
    _write_json(store, f"{prefix}/outputs.json", result.model_dump(mode="json"))


def read_result(store: Store, prefix: str) -> StageResult | None:
    raw = _read_json(store, f"{prefix}/outputs.json")
    try:
        return None if raw is None else StageResult.model_validate(raw)
    except ValidationError:
        return None


def cache_lookup(store: Store, key: str) -> StageResult | None:
    """A reusable result for this cache key, only if every output still matches its digest."""
    raw = _read_json(store, f"cache/{key}.json")
    if raw is None:
        return None
    try:
        result = StageResult.model_validate(raw)
    except ValidationError:
        return None
    return result if all(store.verify(ref) for ref in result.outputs.values()) else None


def cache_record(store: Store, key: str, result: StageResult) -> None:
    _write_json(
        store,
        f"cache/{key}.json",
        result.model_copy(update={"cache_key": key}).model_dump(mode="json"),
    )


def champion_key(namespace: str, pipeline: str) -> str:
    return f"{namespace}/{pipeline}/champion.json"


def read_champion(store: Store, namespace: str, pipeline: str) -> Champion | None:
    raw = _read_json(store, champion_key(namespace, pipeline))
    return None if raw is None else Champion.model_validate(raw)


def write_champion(store: Store, namespace: str, pipeline: str, champion: Champion) -> None:
    """One object write: readers see the old champion or the new one, never a mix."""
    _write_json(store, champion_key(namespace, pipeline), champion.model_dump(mode="json"))


def write_run_record(store: Store, record: RunRecord) -> ArtifactRef:
    key = f"{run_prefix(record.namespace, record.pipeline, record.run)}/run.json"
    return _write_json(store, key, record.model_dump(mode="json", by_alias=True))


def read_run_record(store: Store, namespace: str, pipeline: str, run: str) -> RunRecord | None:
    raw = _read_json(store, f"{run_prefix(namespace, pipeline, run)}/run.json")
    return None if raw is None else RunRecord.model_validate(raw)


def list_run_records(store: Store) -> list[RunRecord]:
    records = []
    for key in store.list(""):
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == "run.json" and parts[0] != "cache":
            raw = _read_json(store, key)
            if raw is not None:
                records.append(RunRecord.model_validate(raw))
    return sorted(records, key=lambda r: r.start_time)
