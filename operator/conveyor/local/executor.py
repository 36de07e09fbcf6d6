"""The local executor: `runs.advance` over a `ProcessLauncher` until the run finishes; the
same run core (observe → plan → apply) the operator runs over Jobs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.pipelinerun import PipelineRunStatus
from conveyor.artifacts.layout import RunRecord, claim_run, read_run_record
from conveyor.artifacts.store import Store
from conveyor.engine.planner import RunPlan
from conveyor.errors import UserError
from conveyor.local.launcher import ProcessLauncher
from conveyor.local.processes import ProcessStarter
from conveyor.runs.advance import RunInputs, advance
from conveyor.runs.context import RunContext

POLL_SECONDS = 0.005


CLAIM_ATTEMPTS = 8


def new_run_name(pipeline: str) -> str:
    """`<pipeline>-<UTC time>-<32 random bits>`, at most 63 characters (a label value). Names
    started in the same second can still repeat (n²/2³³: about one in 20 for 20,000), so a run
    claims its name in the store before using it (`claim_name`)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{pipeline[:38].rstrip('-.')}-{stamp}-{secrets.token_hex(4)}"


def claim_name(store: Store, namespace: str, pipeline: str) -> str:
    """A fresh run name that no other run of this store holds: drawn again when taken."""
    for _ in range(CLAIM_ATTEMPTS):
        name = new_run_name(pipeline)
        if claim_run(store, namespace, pipeline, name):
            return name
    raise UserError(f"no free run name for {pipeline!r} in {store.root} after {CLAIM_ATTEMPTS} tries")


@dataclass
class LocalRun:
    spec: PipelineSpec
    pipeline: str
    store: Store
    params: dict[str, str] = field(default_factory=dict)
    namespace: str = "default"
    run: str = ""
    use_cache: bool = True
    starter: ProcessStarter = field(default_factory=ProcessStarter)
    resume_from: str | None = None
    timeout_seconds: int | None = None
    on_change: Callable[[RunPlan], None] = lambda plan: None
    base_dir: Path | None = None  # relative ingest sources are read from here

    def __post_init__(self) -> None:
        self.run = self.run or claim_name(self.store, self.namespace, self.pipeline)
        self.ctx = RunContext(
            self.spec,
            self.pipeline,
            self.namespace,
            self.run,
            self.store,
            self.params,
            base_dir=self.base_dir,
        )
        self.workdir = Path.home() / ".cache" / "conveyor" / "logs" / self.run
        if (
            self.resume_from
            and read_run_record(self.store, self.namespace, self.pipeline, self.resume_from) is None
        ):
            raise UserError(
                f"--resume-from {self.resume_from}: pipeline {self.pipeline!r} has no such run in "
                f"{self.store.root} (namespace {self.namespace}); `conveyor runs` lists the runs there"
            )

    def execute(self) -> RunRecord:
        """Run to the end; Ctrl-C cancels the run (its stages are stopped, its record written)."""
        return asyncio.run(self._execute())

    async def _execute(self) -> RunRecord:
        self.workdir.mkdir(parents=True, exist_ok=True)
        processes = ProcessLauncher(self.starter, self.ctx, self.workdir)
        inputs = RunInputs(
            timeout_seconds=self.timeout_seconds, resume_from=self.resume_from, use_cache=self.use_cache
        )
        self.status = PipelineRunStatus()
        try:
            return await self._until_finished(processes, inputs)
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels the main task
            return await self._until_finished(processes, replace(inputs, cancelled=True))
        finally:
            processes.stop_all()

    async def _until_finished(self, processes: ProcessLauncher, inputs: RunInputs) -> RunRecord:
        while True:
            step = await advance(self.ctx, processes, self.status, inputs)
            if step.status.model_dump() != self.status.model_dump():
                self.on_change(step.plan)
            self.status = step.status
            if step.record is not None:
                return step.record
            await self._until_something_ends(processes, inputs)

    async def _until_something_ends(self, processes: ProcessLauncher, inputs: RunInputs) -> None:
        """Wait until a stage's attempt exits or times out, or the run's own timeout is due:
        only then can the next step change anything."""
        started = self.status.start_time or datetime.now(UTC)
        limit = inputs.timeout_seconds
        while not processes.any_ended():
            if limit is not None and (datetime.now(UTC) - started).total_seconds() > limit:
                return
            await asyncio.sleep(POLL_SECONDS)
