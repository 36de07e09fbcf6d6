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
from conveyor.api.stages import Expectations
from conveyor.artifacts import expectations as learned
from conveyor.artifacts import layout
from conveyor.artifacts.layout import RunRecord, StageResult
from conveyor.artifacts.localfiles import source_fact
from conveyor.artifacts.store import Store, StoreError, sha256_file
from conveyor.engine.cache import cache_key
from conveyor.engine.invocation import ArtifactRef, StageInvocation
from conveyor.engine.validation import resolve_options, resolve_params
from conveyor.runs.results import reuse_message

LIBRARIES = ("scikit-learn", "pandas", "numpy", "skops")


def runtime_version(image: str | None = None) -> str:
    """Conveyor's version and the libraries that decide a stage's result (a cache key part);
    on a cluster, the stage image too."""
    parts = [f"conveyor={__version__}", *(f"{n}={metadata.version(n)}" for n in LIBRARIES)]
    return ";".join([*parts, *([f"image={image}"] if image else [])])


def spec_digest(spec: PipelineSpec) -> str:
    blob = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _learns(options: dict[str, Any]) -> bool:
    """A validate stage's options that have it infer and keep its expectations."""
    return options.get("expectations") is None and options.get("infer", True) is not False


def _relative_path(source: str) -> bool:
    return "://" not in source and not Path(source).is_absolute()


MAX_SCRIPT_BYTES = 1 << 20  # a custom stage's script, hashed into its cache key


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
    # what started the run (the run record says it, `conveyor models` shows it): manual,
    # schedule, drift, ... (on a cluster, the run's conveyor.dev/trigger label)
    trigger: str = "manual"
    script_digests: dict[tuple[str, int, int], str] = field(default_factory=dict, repr=False)

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
                facts["source"] = source_fact(path)  # `local.fastrun` checks it so too
        if stage.uses == "evaluate":
            # The model to beat: none, or the champion unless it is this very model (a re-run
            # of the run that promoted it faces the same decision as that run did).
            champion = layout.read_champion(self.store, self.namespace, self.pipeline)
            own = {ref.sha256 for outs in inputs.values() for ref in outs.values()}
            beaten = champion.model.sha256 if champion else ""
            facts["champion"] = "" if beaten in own else beaten
        if stage.uses == "predict":
            # scoring "the champion" means the model that is champion now: a new one is new work
            choice = options.get("model") or {}
            source = choice.get("fromPipeline") or choice.get("from_pipeline")
            if isinstance(source, str) and not choice.get("version"):
                scorer = layout.read_champion(self.store, self.namespace, source)
                facts["model"] = scorer.model.sha256 if scorer else ""
        if stage.uses is None:
            facts.update(self._code_facts(stage))
        return facts

    def _code_facts(self, stage: Stage) -> dict[str, str]:
        """A custom stage's code: the digest of each local file up to `MAX_SCRIPT_BYTES` its
        command names (editing its script is new work, as editing its command is; an
        interpreter's binary is larger and left out)."""
        facts = {}
        for arg in [*(stage.command or []), *(stage.args or [])]:
            script = self._local_file(arg)
            if script is None:
                continue
            stat = script.stat()
            if stat.st_size <= MAX_SCRIPT_BYTES:
                seen = (str(script), stat.st_mtime_ns, stat.st_size)
                if seen not in self.script_digests:
                    self.script_digests[seen] = sha256_file(script)
                facts[f"file:{arg}"] = self.script_digests[seen]
        return facts

    def _local_file(self, arg: str) -> Path | None:
        """The file an argument of a custom stage's command names on this machine (relative to
        the pipeline's folder, as ingest sources are), or None. On a cluster nothing matches:
        there the image is the code."""
        if not arg or arg.startswith("-") or len(arg) > 4096 or "\n" in arg:
            return None
        path = Path(arg) if Path(arg).is_absolute() else (self.base_dir or Path.cwd()) / arg
        try:
            return path if path.is_file() else None
        except OSError:
            return None

    def cache_hit(self, stage: Stage, inv: StageInvocation) -> StageResult | None:
        """A reusable result; never an evaluate's promotion whose effect is gone (the champion
        is no longer its model, e.g. champion.json was deleted): promoting is a side effect a
        pointer cannot replay, so that stage runs and decides again."""
        hit = layout.cache_lookup(self.store, inv.cache_key) if stage.cache else None
        if hit is not None and stage.uses == "evaluate" and hit.metrics.get("promoted"):
            champion = layout.read_champion(self.store, self.namespace, self.pipeline)
            model = hit.outputs.get("model")
            if champion is None or model is None or champion.model.sha256 != model.sha256:
                return None
        if hit is not None and stage.uses == "validate" and _learns(inv.options):
            return self._learned_hit(stage, hit)
        return hit

    def _learned_hit(self, stage: Stage, hit: StageResult) -> StageResult | None:
        """A validate stage that learns its expectations (none given) reuses a result only if
        it checked the data against the expectations this pipeline holds. When the pipeline
        holds none (the result is another pipeline's, on the same data, or they were deleted),
        the result's become the pipeline's, as running the stage would have made them: keeping
        them is a side effect a pointer alone does not replay."""
        ref = hit.outputs.get("expectations")
        if ref is None:
            return None
        try:
            kept = learned.read(self.store, self.namespace, self.pipeline, stage.name)
            if kept is not None:
                return hit if learned.digest(kept) == ref.sha256 else None
            used = Expectations.model_validate_json(self.store.read_bytes(self.store.key(ref.uri)))
        except (learned.CorruptExpectations, StoreError, ValueError):
            return None  # the stage runs, and says what is wrong
        if learned.digest(used) != ref.sha256:
            return None
        return hit if learned.keep(self.store, self.namespace, self.pipeline, stage.name, used) else None

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
        record = model_record(
            self.store, [(s.name, results[s.name]) for s in self.spec.stages if s.name in results]
        )
        if record is None:
            return None
        return record.model_copy(update={"hyperparameters": self._hyperparameters(record.uri, results)})

    def _hyperparameters(self, model_uri: str, results: dict[str, StageResult]) -> dict[str, str]:
        """The estimator parameters the model was trained with: its train stage's `params`,
        overridden by the best of a search (`search.json`). Values are JSON, strings as is."""
        for name, result in results.items():
            ref = result.outputs.get("model")
            if ref is None or ref.uri != model_uri or "decision" in result.outputs:
                continue
            chosen = dict(self.options.get(name, {}).get("params") or {})
            if "search" in result.outputs:
                search = json.loads(self.store.read_bytes(self.store.key(result.outputs["search"].uri)))
                chosen.update(search.get("best_params") or {})
            return {k: v if isinstance(v, str) else json.dumps(v) for k, v in sorted(chosen.items())}
        return {}

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
            trigger=self.trigger,
        )
        return record, layout.write_run_record(self.store, record).uri


def model_record(store: Store, results: list[tuple[str, StageResult]]) -> ModelRecord | None:
    """The model of the run, from its stages' results in pipeline order. With evaluate stages
    (several in parallel branches, say): the model this run promoted last (the highest version
    it made), else the first that awaits approval (`promotion: Manual`: its record says
    Pending until `runs.approval` decides), else the first evaluated model that is a champion
    version, else the first evaluated one. Without: the last stage that produced a model. A
    decision reused from the cache or an earlier run promoted nothing in this run, whatever it
    says."""
    decided = [
        (name, result, json.loads(store.read_bytes(store.key(result.outputs["decision"].uri))))
        for name, result in results
        if "decision" in result.outputs and "model" in result.outputs
    ]
    if not decided:
        models = [result.outputs["model"] for _, result in results if "model" in result.outputs]
        if not models:
            return None
        return ModelRecord(uri=models[-1].uri, sha256=models[-1].sha256, decision="not evaluated")
    own = [d for d in decided if d[2].get("promoted") and d[1].reused_from is None]
    awaiting = [d for d in decided if d[2].get("awaiting_approval")]
    versioned = [d for d in decided if d[2].get("version")]
    name, result, decision = (
        max(own, key=lambda d: int(d[2]["version"] or 0)) if own else (awaiting or versioned or decided)[0]
    )
    reason = str(decision.get("reason", ""))
    if result.reused_from is not None and decision.get("promoted"):
        reason += f" ({reuse_message(result.reused_from)}: this run promoted nothing)"
    chosen = result.outputs["model"]
    return ModelRecord(
        uri=chosen.uri,
        sha256=chosen.sha256,
        metrics={k: v for k, v in result.metrics.items() if k not in ("gate_passed", "promoted")},
        promoted=bool(decision.get("promoted")) and result.reused_from is None,
        passed=bool(decision["passed"]) if "passed" in decision else None,
        decision=reason,
        version=decision.get("version"),
        stage=name,
        approval="Pending" if decision.get("awaiting_approval") else None,
    )
