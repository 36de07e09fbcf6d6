"""Where things live in a store, and the records kept there (DESIGN.md, "Artifacts").

<ns>/<pipeline>/<run>/<stage>/outputs.json   committed last: a stage without it has no
<ns>/<pipeline>/<run>/<stage>/metrics.json   visible outputs, whatever else was written
<ns>/<pipeline>/<run>/run.json               lineage
<ns>/<pipeline>/champion.json                the promoted model (its latest version)
<ns>/<pipeline>/_versions/<version>.json     every promotion (`artifacts.champion`)
cache/<cache key>.json                       pointer to a reusable stage result
cache/runs/<request digest>.json             run memo: a fully cached run (`local.memo`)

The keys are spelled in `keys` (which imports no pydantic). Only this module knows these
depths: `RunPath` is a run's place, `ArtifactPath.from_uri` finds the store root, the run and
the stage of an artifact's URI (a model's, say), and `model_version` names the run a model
came from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from conveyor.api.pipelinerun import ModelRecord, StageStatus
from conveyor.artifacts import keys
from conveyor.artifacts.keys import CACHE as CACHE
from conveyor.artifacts.keys import RUN_CLAIM as RUN_CLAIM
from conveyor.artifacts.keys import RUN_RECORD as RUN_RECORD
from conveyor.artifacts.keys import cache_pointer_key as cache_pointer_key
from conveyor.artifacts.keys import champion_key as champion_key
from conveyor.artifacts.keys import run_prefix as run_prefix
from conveyor.artifacts.keys import stage_prefix as stage_prefix
from conveyor.artifacts.localfiles import json_bytes
from conveyor.artifacts.store import Store, StoreError
from conveyor.artifacts.uri import StoreURI
from conveyor.engine.invocation import ArtifactRef
from conveyor.errors import UserError

JSON = "application/json"
log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class StageResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outputs: dict[str, ArtifactRef] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    cache_key: str = ""
    reused_from: str | None = Field(default=None, description="cache | run:<name>")


class Champion(BaseModel):
    """A promoted model: `champion.json` is the latest one, `_versions/` keeps each."""

    model_config = ConfigDict(extra="ignore")

    run: str
    model: ArtifactRef
    profile: ArtifactRef | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    promoted_at: datetime
    # 1, 2, ... in promotion order; a champion.json written before versions existed is the 1st
    version: int = Field(default=1, ge=1)
    stage: str = Field(default="", description="The evaluate stage that promoted it.")
    approved_by: str = Field(default="", description="Who approved it, when approval is required.")


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
    trigger: str = Field(default="", description="What started the run: manual, schedule, drift, ...")


@dataclass(frozen=True)
class RunPath:
    """Where one run lives in a store: `<ns>/<pipeline>/<run>/`."""

    namespace: str
    pipeline: str
    run: str

    @property
    def prefix(self) -> str:
        return run_prefix(self.namespace, self.pipeline, self.run)

    @property
    def record_key(self) -> str:
        return keys.record_key(self.namespace, self.pipeline, self.run)

    def stage(self, stage: str) -> str:
        """The prefix of one stage's outputs."""
        return stage_prefix(self.namespace, self.pipeline, self.run, stage)

    @classmethod
    def from_record_key(cls, key: str) -> RunPath | None:
        """The run whose `run.json` this key is, or None for any other key."""
        parts = key.split("/")
        if len(parts) != 4 or parts[3] != RUN_RECORD or parts[0] == CACHE:
            return None
        return cls(*parts[:3])

    @classmethod
    def from_uri(cls, uri: str) -> RunPath:
        """The run an artifact's URI points into (see `ArtifactPath.from_uri`)."""
        return ArtifactPath.from_uri(uri).run


@dataclass(frozen=True)
class ArtifactPath:
    """An artifact of a run's stage: `<root>/<ns>/<pipeline>/<run>/<stage>/<name>`."""

    root: StoreURI
    run: RunPath
    stage: str
    name: str

    DEPTH: ClassVar[int] = 5  # segments below the store root: ns, pipeline, run, stage, name

    @property
    def key(self) -> str:
        return f"{self.run.stage(self.stage)}/{self.name}"

    @property
    def uri(self) -> str:
        return self.root.join(self.key).uri

    @classmethod
    def from_uri(cls, uri: str) -> ArtifactPath:
        """Split a URI (not a path) into store root, run, stage and file name: the store's root
        is whatever comes before the last five segments, a bucket or a folder other than `/`.
        A StoreError if there is no such root."""
        return cls.locate(StoreURI.parse_uri(uri))

    @classmethod
    def locate(cls, location: StoreURI) -> ArtifactPath:
        """`from_uri` for a parsed URI (`StoreURI.parse` also takes a local path)."""
        parts = location.parts
        if len(parts) < cls.DEPTH or (len(parts) == cls.DEPTH and not location.bucket):
            raise StoreError(
                f"{location.uri} is not a run's artifact "
                "(expected <store>/<ns>/<pipeline>/<run>/<stage>/<file>)"
            )
        ns, pipeline, run, stage, name = parts[-cls.DEPTH :]
        return cls(location.parent(cls.DEPTH), RunPath(ns, pipeline, run), stage, name)


def model_version(uri: str) -> str:
    """What a ModelDeployment shows as its model's version: the run the model came from, or
    "model" when the URI does not point into a run (or is no URI). Pure."""
    try:
        return RunPath.from_uri(uri).run
    except StoreError:
        return "model"


def claim_run(store: Store, namespace: str, pipeline: str, run: str) -> bool:
    """Take a run's name in the store, once: False when another run holds it already (a
    create-only write: a lock and rename locally, `If-None-Match: *` on S3)."""
    return store.write_if(keys.claim_key(namespace, pipeline, run), b"", JSON, token=None)


def _write_json(store: Store, key: str, value: Any) -> ArtifactRef:
    return store.write_bytes(key, json_bytes(value), JSON)


class CorruptRecord(UserError):
    """A record of the store that does not parse: the message names the file and what to do."""


CHAMPION_FIX = (
    "restore it from the newest file under _versions/ beside it, or delete it to start afresh "
    "(the next model that passes its gate becomes the champion)"
)


def _read_json(store: Store, key: str, fix: str = "") -> Any | None:
    """The JSON at `key`, None when there is none; CorruptRecord (saying `fix`) when it does
    not parse."""
    try:
        data = store.read_bytes(key)
    except StoreError:
        return None
    try:
        return json.loads(data)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise CorruptRecord(
            f"{store.uri(key)} is not valid JSON ({err})" + (f"; {fix}" if fix else "")
        ) from None


def _read_model(store: Store, key: str, model: type[M], fix: str) -> M | None:
    """`_read_json` validated as `model`; a record that is not one is a CorruptRecord saying `fix`."""
    raw = _read_json(store, key, fix)
    if raw is None:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "(the whole record)"
        raise CorruptRecord(
            f"{store.uri(key)} is not a valid record: {where}: {problem['msg']}; {fix}"
        ) from None


def commit_result(store: Store, prefix: str, result: StageResult) -> None:
    """Metrics first, outputs.json last: its presence is what commits the stage."""
    _write_json(store, f"{prefix}/{keys.METRICS}", result.metrics)
    _write_json(store, f"{prefix}/{keys.OUTPUTS}", result.model_dump(mode="json"))


def relocated_uri(store: Store, uri: str) -> str:
    """`uri` where this store holds it. Records name artifacts by absolute URI; in a store that
    was moved or copied, a run's artifact named under the old root (`ArtifactPath`) is the one
    at the same key under this root (its digest says whether it still is)."""
    try:
        store.key(uri)
        return uri
    except StoreError:
        pass
    try:
        key = ArtifactPath.from_uri(uri).key
    except StoreError:
        return uri  # not a run's artifact: left as recorded
    return store.uri(key)


def relocated(store: Store, ref: ArtifactRef) -> ArtifactRef:
    """`ref` where this store holds it (see `relocated_uri`)."""
    uri = relocated_uri(store, ref.uri)
    return ref if uri == ref.uri else ref.model_copy(update={"uri": uri})


def relocated_record(store: Store, record: RunRecord) -> RunRecord:
    """A run record with every artifact it names where this store holds it: its artifacts, its
    stages' outputs and its model (so `show`, `serve --pipeline` and lineage read a copy)."""
    artifacts = {
        stage: {name: relocated(store, ref) for name, ref in refs.items()}
        for stage, refs in record.artifacts.items()
    }
    stages = [
        s.model_copy(update={"outputs": {n: relocated_uri(store, u) for n, u in s.outputs.items()}})
        for s in record.stages
    ]
    model = record.model and record.model.model_copy(update={"uri": relocated_uri(store, record.model.uri)})
    return record.model_copy(update={"artifacts": artifacts, "stages": stages, "model": model})


def _relocated_result(store: Store, result: StageResult) -> StageResult:
    outputs = {name: relocated(store, ref) for name, ref in result.outputs.items()}
    return result.model_copy(update={"outputs": outputs})


def read_result(store: Store, prefix: str) -> StageResult | None:
    """A stage's committed result; None when there is none or it does not parse (the stage did
    not commit: it runs again and writes a good one)."""
    try:
        raw = _read_json(store, f"{prefix}/{keys.OUTPUTS}")
        return None if raw is None else _relocated_result(store, StageResult.model_validate(raw))
    except (CorruptRecord, ValidationError):
        return None


def cache_lookup(store: Store, key: str) -> StageResult | None:
    """A reusable result for this cache key, only if every output still matches its digest."""
    try:  # a pointer that does not parse is a miss: the stage runs and records a good one
        raw = _read_json(store, cache_pointer_key(key))
        if raw is None:
            return None
        result = _relocated_result(store, StageResult.model_validate(raw))
    except (CorruptRecord, ValidationError):
        return None
    return result if all(store.verify(ref) for ref in result.outputs.values()) else None


def cache_record(store: Store, key: str, result: StageResult) -> None:
    _write_json(
        store,
        cache_pointer_key(key),
        result.model_copy(update={"cache_key": key}).model_dump(mode="json"),
    )


def read_champion(store: Store, namespace: str, pipeline: str) -> Champion | None:
    champion = _read_model(store, champion_key(namespace, pipeline), Champion, CHAMPION_FIX)
    return None if champion is None else relocated_champion(store, champion)


def relocated_champion(store: Store, champion: Champion) -> Champion:
    """`champion` with its model and profile where this store holds them (see `relocated`)."""
    profile = champion.profile and relocated(store, champion.profile)
    return champion.model_copy(update={"model": relocated(store, champion.model), "profile": profile})


def write_champion(store: Store, namespace: str, pipeline: str, champion: Champion) -> None:
    """One unconditional object write: readers see the old champion or the new one, never a
    mix. Promotion does not use it: `champion.promote` compares and swaps."""
    _write_json(store, champion_key(namespace, pipeline), champion.model_dump(mode="json"))


def write_run_record(store: Store, record: RunRecord) -> ArtifactRef:
    key = RunPath(record.namespace, record.pipeline, record.run).record_key
    return _write_json(store, key, record.model_dump(mode="json", by_alias=True))


def read_run_record(store: Store, namespace: str, pipeline: str, run: str) -> RunRecord | None:
    key = RunPath(namespace, pipeline, run).record_key
    record = _read_model(store, key, RunRecord, "delete the run's folder, or restore run.json")
    return None if record is None else relocated_record(store, record)


def list_run_records(store: Store) -> list[RunRecord]:
    """Every run record of the store, oldest first; one that does not parse is left out with a
    warning naming it (one broken file must not hide all the runs)."""
    records = []
    for key in store.list(""):
        if RunPath.from_record_key(key) is not None:
            try:
                record = _read_model(store, key, RunRecord, "")
            except CorruptRecord as err:
                log.warning("skipping %s", err)
                continue
            if record is not None:
                records.append(relocated_record(store, record))
    return sorted(records, key=lambda r: r.start_time)
