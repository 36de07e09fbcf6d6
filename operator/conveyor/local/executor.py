"""The local executor: plan, launch, observe, repeat; the same planner the operator uses."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.pipelinerun import StagePhase, StageStatus
from conveyor.artifacts.layout import RunRecord, StageResult
from conveyor.artifacts.store import Store
from conveyor.engine.invocation import StageInvocation
from conveyor.engine.params import substitute
from conveyor.engine.planner import RunFacts, RunPlan, plan_run
from conveyor.local.launch import Launcher, Process, StageFiles
from conveyor.orchestration import RunContext

POLL_SECONDS = 0.005


def new_run_name(pipeline: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{pipeline[:40]}-{stamp}-{secrets.token_hex(2)}"


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
        self.ctx = RunContext(
            self.spec,
            self.pipeline,
            self.namespace,
            self.run,
            self.store,
            self.params,
            base_dir=self.base_dir,
        )
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
        inv = self.ctx.invocation(stage, self.results)
        previous = self.stages.get(name)
        attempts = (previous.attempts if previous else 0) + 1
        if attempts == 1 and self.use_cache:
            hit = self.ctx.cache_hit(stage, inv)
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
            resolved = self.ctx.resolved
            argv = substitute([*(stage.command or []), *(stage.args or [])], resolved)
            env = {e.name: substitute(e.value, resolved) for e in stage.env}
            process = self.launcher.start_custom(argv, inv, files, env)
        self.active[name] = _Active(process, inv, files, time.monotonic())
        self.stages[name] = StageStatus(
            name=name,
            phase=StagePhase.RUNNING,
            attempts=attempts,
            start_time=datetime.now(UTC),
            cache_key=inv.cache_key,
        )

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
            result = self.ctx.committed(name)
            if code == 0 and result is None and stage.image is not None:
                result = self.ctx.commit_empty(name)
            if code == 0 and result is not None:
                self.ctx.record_cache(stage, act.inv, result)
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
            self.stages[name] = status.model_copy(update={"phase": StagePhase.PENDING, "message": message})
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
            result = self.ctx.committed(stage.name, run=self.resume_from)
            if result is not None:
                self._succeed(stage.name, result, attempts=0, message=f"reused from run {self.resume_from}")

    def _record(self, plan: RunPlan) -> RunRecord:
        return self.ctx.write_record(plan.status, self.results, self.start_time, self.resume_from)


def _failure_message(files: StageFiles, code: int) -> str:
    if files.termination.is_file():
        text = files.termination.read_text().strip()
        if text:
            return text
    if code < 0:
        return f"killed by signal {-code}"
    log = files.log.read_text(errors="replace").strip() if files.log.is_file() else ""
    tail = log.splitlines()[-5:]
    return f"exited with code {code}" + (": " + " | ".join(tail) if tail else "")
