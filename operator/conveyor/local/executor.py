"""The local executor: plan, launch, observe, repeat; the same planner the operator uses."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from conveyor import __version__
from conveyor.api.pipeline import PipelineSpec, Stage
from conveyor.api.pipelinerun import ModelRecord, RunPhase, StagePhase, StageStatus
from conveyor.artifacts import layout
from conveyor.artifacts.layout import RunRecord, StageResult
from conveyor.artifacts.store import Store, sha256_file
from conveyor.engine.cache import cache_key
from conveyor.engine.invocation import ArtifactRef, StageInvocation
from conveyor.engine.params import substitute
from conveyor.engine.planner import RunFacts, RunPlan, plan_run
from conveyor.engine.validation import resolve_options, resolve_params
from conveyor.local.launch import Launcher, Process, StageFiles

POLL_SECONDS = 0.005


def runtime_version() -> str:
    """Conveyor's version and the libraries that decide a stage's result (a cache key part)."""
    libs = ("scikit-learn", "pandas", "numpy", "skops")
    return ";".join([f"conveyor={__version__}", *(f"{n}={metadata.version(n)}" for n in libs)])


def new_run_name(pipeline: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{pipeline[:40]}-{stamp}-{secrets.token_hex(2)}"


def spec_digest(spec: PipelineSpec) -> str:
    blob = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class _Active:
    process: Process
    inv: StageInvocation
    files: StageFiles
    started: float


@dataclass
class LocalRun:
    spec: PipelineSpec
    pipeline: str
    store: Store
    params: dict[str, str] = field(default_factory=dict)
    namespace: str = "default"
    run: str = ""
    use_cache: bool = True
    launcher: Launcher = field(default_factory=Launcher)
    resume_from: str | None = None
    timeout_seconds: int | None = None
    on_change: Callable[[RunPlan], None] = lambda plan: None
    base_dir: Path | None = None  # relative ingest sources are read from here

    def __post_init__(self) -> None:
        self.run = self.run or new_run_name(self.pipeline)
        self.version = runtime_version()
        self.resolved = resolve_params(self.spec, self.params)
        self.options = resolve_options(self.spec, self.resolved)
        for stage in self.spec.stages:
            source = self.options[stage.name].get("source")
            if stage.uses == "ingest" and isinstance(source, str) and _relative_path(source):
                base = self.base_dir or Path.cwd()
                self.options[stage.name]["source"] = str((base / source).resolve())
        self.stages: dict[str, StageStatus] = {}
        self.results: dict[str, StageResult] = {}
        self.active: dict[str, _Active] = {}
        self.workdir = Path.home() / ".cache" / "conveyor" / "logs" / self.run
        self.start_time = datetime.now(UTC)
        self.cancelled = False
        self.plan = RunPlan()

    # the loop -----------------------------------------------------------------------------
    def execute(self) -> RunRecord:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._reuse_earlier_run()
        try:
            while True:
                self._observe()
                plan = self._plan()
                for name in plan.stop:
                    self._stop(name)
                if plan.finished:
                    return self._record(plan)
                for name in plan.start:
                    self._start(name)
                if plan.start:
                    continue  # a cache hit may make more stages ready right away
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            self.cancelled = True
            for name in list(self.active):
                self._stop(name)
            return self._record(self._plan())

    def _plan(self) -> RunPlan:
        facts = RunFacts(
            stages=dict(self.stages),
            now=datetime.now(UTC),
            start_time=self.start_time,
            cancelled=self.cancelled,
            timeout_seconds=self.timeout_seconds,
        )
        plan = plan_run(self.spec, facts, self.plan.status)
        changed = plan.status.model_dump() != self.plan.status.model_dump()
        self.plan = plan
        if changed:
            self.on_change(plan)
        return plan

    # starting -----------------------------------------------------------------------------
    def _start(self, name: str) -> None:
        stage = self.spec.stage(name)
        inv = self._invocation(stage)
        previous = self.stages.get(name)
        attempts = (previous.attempts if previous else 0) + 1
        if attempts == 1 and self.use_cache and stage.cache:
            hit = layout.cache_lookup(self.store, inv.cache_key)
            if hit is not None:
                self._succeed(name, hit, attempts=0, cache_hit=True, message="cache hit")
                return
        files = StageFiles(
            log=self.workdir / f"{name}.{attempts}.log",
            termination=self.workdir / f"{name}.{attempts}.termination",
        )
        files.termination.unlink(missing_ok=True)
        if stage.uses is not None:
            process = self.launcher.start_builtin(inv, files)
        else:
            argv = substitute([*(stage.command or []), *(stage.args or [])], self.resolved)
            env = {e.name: substitute(e.value, self.resolved) for e in stage.env}
            process = self.launcher.start_custom(argv, inv, files, env)
        self.active[name] = _Active(process, inv, files, time.monotonic())
        self.stages[name] = StageStatus(
            name=name,
            phase=StagePhase.RUNNING,
            attempts=attempts,
            start_time=datetime.now(UTC),
            cache_key=inv.cache_key,
        )

    def _invocation(self, stage: Stage) -> StageInvocation:
        inputs = {dep: self.results[dep].outputs for dep in stage.depends_on}
        options = self.options[stage.name]
        definition = stage.model_dump(by_alias=True, mode="json")
        key = cache_key(
            definition, options, inputs, self.version, self._external(stage, options, inputs)
        )
        prefix = layout.stage_prefix(self.namespace, self.pipeline, self.run, stage.name)
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
            output_prefix=self.store.uri(prefix),
            cache_key=key,
            version=self.version,
        )

    def _external(
        self, stage: Stage, options: dict[str, Any], inputs: dict[str, dict[str, ArtifactRef]]
    ) -> dict[str, str]:
        """Facts outside the store that change a stage's result."""
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
            facts["champion"] = (
                champion.model.sha256 if champion and champion.model.sha256 not in own else ""
            )
        if stage.uses == "validate" and not options.get("expectations"):
            key = f"{self.namespace}/{self.pipeline}/expectations/{stage.name}.json"
            facts["expectations"] = str(self.store.exists(key))
        return facts

    # observing ----------------------------------------------------------------------------
    def _observe(self) -> None:
        for name, act in list(self.active.items()):
            stage = self.spec.stage(name)
            code = act.process.poll()
            if code is None:
                limit = stage.timeout_seconds
                if limit is not None and time.monotonic() - act.started > limit:
                    act.process.kill()
                    del self.active[name]
                    self._fail_or_retry(name, f"timed out after {limit}s")
                continue
            del self.active[name]
            result = layout.read_result(self.store, self.store.key(act.inv.output_prefix))
            if code == 0 and result is None and stage.image is not None:
                result = StageResult()  # a custom stage that wrote nothing
                layout.commit_result(self.store, self.store.key(act.inv.output_prefix), result)
            if code == 0 and result is not None:
                if stage.cache:
                    layout.cache_record(self.store, act.inv.cache_key, result)
                self._succeed(name, result, attempts=self.stages[name].attempts)
            else:
                self._fail_or_retry(name, _failure_message(act.files, code))

    def _succeed(
        self,
        name: str,
        result: StageResult,
        attempts: int,
        cache_hit: bool = False,
        message: str = "",
    ) -> None:
        prev = self.stages.get(name)
        now = datetime.now(UTC)
        self.results[name] = result
        self.stages[name] = StageStatus(
            name=name,
            phase=StagePhase.SUCCEEDED,
            attempts=attempts,
            start_time=prev.start_time if prev and prev.start_time else now,
            finish_time=now,
            message=message,
            outputs={k: v.uri for k, v in result.outputs.items()},
            metrics=result.metrics,
            cache_hit=cache_hit,
            cache_key=result.cache_key or None,
        )

    def _fail_or_retry(self, name: str, message: str) -> None:
        status = self.stages[name]
        if status.attempts <= self.spec.stage(name).retries:
            # Pending again: the planner starts it on its next pass, attempts carried over.
            self.stages[name] = status.model_copy(
                update={"phase": StagePhase.PENDING, "message": message}
            )
            return
        self.stages[name] = status.model_copy(
            update={
                "phase": StagePhase.FAILED,
                "message": message,
                "finish_time": datetime.now(UTC),
            }
        )

    def _stop(self, name: str) -> None:
        act = self.active.pop(name, None)
        if act is not None:
            act.process.kill()

    def _reuse_earlier_run(self) -> None:
        if not self.resume_from:
            return
        for stage in self.spec.stages:
            prefix = layout.stage_prefix(
                self.namespace, self.pipeline, self.resume_from, stage.name
            )
            result = layout.read_result(self.store, prefix)
            if result is not None and all(self.store.verify(r) for r in result.outputs.values()):
                self._succeed(
                    stage.name, result, attempts=0, message=f"reused from run {self.resume_from}"
                )

    # the record ---------------------------------------------------------------------------
    def _record(self, plan: RunPlan) -> RunRecord:
        status = plan.status
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
            start_time=self.start_time,
            completion_time=status.completion_time,
            stages=status.stages,
            artifacts={n: r.outputs for n, r in self.results.items()},
            model=model_record(self.store, self.results),
            resumed_from=self.resume_from,
        )
        layout.write_run_record(self.store, record)
        return record


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
            metrics = {
                k: v for k, v in result.metrics.items() if k not in ("gate_passed", "promoted")
            }
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


def _relative_path(source: str) -> bool:
    return "://" not in source and not Path(source).is_absolute()


def _failure_message(files: StageFiles, code: int) -> str:
    if files.termination.is_file():
        text = files.termination.read_text().strip()
        if text:
            return text
    if code < 0:
        return f"killed by signal {-code}"
    tail = (
        files.log.read_text(errors="replace").strip().splitlines()[-5:]
        if files.log.is_file()
        else []
    )
    return f"exited with code {code}" + (": " + " | ".join(tail) if tail else "")


def phase_ok(record: RunRecord) -> bool:
    return record.phase == RunPhase.SUCCEEDED
