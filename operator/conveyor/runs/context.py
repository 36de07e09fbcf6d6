"""One run's view of the store: its invocations and cache keys, its committed results, the
model it produced and its run record. Both executors use it through `runs.advance`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from conveyor import __version__
from conveyor.api.pipeline import PipelineSpec, Stage
from conveyor.api.pipelinerun import ModelRecord, PipelineRunStatus
from conveyor.artifacts import layout
from conveyor.artifacts.layout import RunRecord, StageResult
from conveyor.artifacts.store import Store, sha256_file
from conveyor.engine.cache import cache_key
from conveyor.engine.invocation import ArtifactRef, StageInvocation
from conveyor.engine.validation import resolve_options, resolve_params

LIBRARIES = ("scikit-learn", "pandas", "numpy", "skops")


def runtime_version(image: str | None = None) -> str:
    """Conveyor's version and the libraries that decide a stage's result (a cache key part);
    on a cluster, the stage image too."""
    parts = [f"conveyor={__version__}", *(f"{n}={metadata.version(n)}" for n in LIBRARIES)]
    return ";".join([*parts, *([f"image={image}"] if image else [])])


def spec_digest(spec: PipelineSpec) -> str:
    blob = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _relative_path(source: str) -> bool:
    return "://" not in source and not Path(source).is_absolute()


@dataclass
class RunContext:
    spec: PipelineSpec
    pipeline: str
    namespace: str
    run: str
    store: Store
    params: dict[str, str] = field(default_factory=dict)
    version: str = ""
    base_dir: Path | None = None  # relative local ingest sources are read from here
    # results of this run's stages already read and verified: a committed result never changes,
    # so a caller that looks again and again (the operator's reconciles) reads each once
    known: dict[str, StageResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.version = self.version or runtime_version()
        self.resolved = resolve_params(self.spec, self.params)
        self.options = resolve_options(self.spec, self.resolved)
        for stage in self.spec.stages:
            source = self.options[stage.name].get("source")
            if stage.uses == "ingest" and isinstance(source, str) and _relative_path(source):
                base = self.base_dir or Path.cwd()
                self.options[stage.name]["source"] = str((base / source).resolve())

    def prefix(self, stage: str, run: str | None = None) -> str:
        return layout.stage_prefix(self.namespace, self.pipeline, run or self.run, stage)

    def invocation(self, stage: Stage, results: dict[str, StageResult]) -> StageInvocation:
        inputs = {dep: results[dep].outputs for dep in stage.depends_on}
        options = self.options[stage.name]
        definition = stage.model_dump(by_alias=True, mode="json")
        external = self._external(stage, options, inputs)
        key = cache_key(definition, options, inputs, self.version, external)
        return StageInvocation(
            namespace=self.namespace,
            pipeline=self.pipeline,
            run=self.run,
            stage=stage.name,
            uses=stage.uses,
            options=options,
            params=self.resolved,
            inputs=inputs,
            store=self.store.root,
            output_prefix=self.store.uri(self.prefix(stage.name)),
            cache_key=key,
            version=self.version,
        )

    def _external(
        self, stage: Stage, options: dict[str, Any], inputs: dict[str, dict[str, ArtifactRef]]
    ) -> dict[str, str]:
        """Facts outside the inputs that change a stage's result."""
        facts: dict[str, str] = {}
        source = options.get("source")
        if stage.uses == "ingest" and isinstance(source, str):
            parsed = urlparse(source)
            if parsed.scheme in ("", "file"):
                path = Path(parsed.path if parsed.scheme else source)
                facts["source"] = sha256_file(path) if path.is_file() else "missing"
        if stage.uses == "evaluate":
            # The model to beat: none, or the champion unless it is this very model (a re-run
            # of the run that promoted it faces the same decision as that run did).
            champion = layout.read_champion(self.store, self.namespace, self.pipeline)
            own = {ref.sha256 for outs in inputs.values() for ref in outs.values()}
            beaten = champion.model.sha256 if champion else ""
            facts["champion"] = "" if beaten in own else beaten
        if stage.uses == "validate" and not options.get("expectations"):
            key = f"{self.namespace}/{self.pipeline}/expectations/{stage.name}.json"
            facts["expectations"] = str(self.store.exists(key))
        return facts

    def cache_hit(self, stage: Stage, inv: StageInvocation) -> StageResult | None:
        return layout.cache_lookup(self.store, inv.cache_key) if stage.cache else None

    def committed(self, stage: str, run: str | None = None) -> StageResult | None:
        """The stage's committed result in this run (or another), if its outputs still verify."""
        if run is None and stage in self.known:
            return self.known[stage]
        result = layout.read_result(self.store, self.prefix(stage, run))
        if result is None or not all(self.store.verify(r) for r in result.outputs.values()):
            return None
        if run is None:
            self.known[stage] = result
        return result

    def model_record(self, results: dict[str, StageResult]) -> ModelRecord | None:
        return model_record(self.store, results)

    def write_record(
        self,
        status: PipelineRunStatus,
        results: dict[str, StageResult],
        start_time: datetime,
        resumed_from: str | None,
    ) -> tuple[RunRecord, str]:
        """Write the run record (its model as the status says); the record and its URI."""
        cond = status.conditions[-1] if status.conditions else None
        record = RunRecord(
            namespace=self.namespace,
            pipeline=self.pipeline,
            run=self.run,
            phase=status.phase,
            message=cond.message if cond else "",
            spec_digest=spec_digest(self.spec),
            params=self.resolved,
            version=self.version,
            start_time=start_time,
            completion_time=status.completion_time,
            stages=status.stages,
            artifacts={n: r.outputs for n, r in results.items()},
            model=status.model,
            resumed_from=resumed_from,
        )
        return record, layout.write_run_record(self.store, record).uri


def model_record(store: Store, results: dict[str, StageResult]) -> ModelRecord | None:
    """The model of the run: from the stage that decided on it (evaluate), else the last
    stage that produced one."""
    chosen: ArtifactRef | None = None
    metrics: dict[str, float] = {}
    decision: dict[str, Any] | None = None
    for result in results.values():
        if "model" not in result.outputs:
            continue
        chosen = result.outputs["model"]
        if "decision" in result.outputs:
            decision = json.loads(store.read_bytes(store.key(result.outputs["decision"].uri)))
            metrics = {k: v for k, v in result.metrics.items() if k not in ("gate_passed", "promoted")}
            break
    if chosen is None:
        return None
    return ModelRecord(
        uri=chosen.uri,
        sha256=chosen.sha256,
        metrics=metrics,
        promoted=bool(decision and decision.get("promoted")),
        decision=str(decision["reason"]) if decision else "not evaluated",
    )
