"""The local executor: `runs.advance` over a `ProcessLauncher` until the run finishes; the
same run core (observe → plan → apply) the operator runs over Jobs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.pipelinerun import PipelineRunStatus, RunPhase
from conveyor.artifacts.layout import RunRecord, claim_run, read_run_record
from conveyor.artifacts.store import Store
from conveyor.engine.planner import RunPlan
from conveyor.errors import UserError
from conveyor.local.guard import Guard
from conveyor.local.launcher import ProcessLauncher
from conveyor.local.memo import lookup_line
from conveyor.local.names import CLAIM_ATTEMPTS as CLAIM_ATTEMPTS
from conveyor.local.names import new_run_name as new_run_name
from conveyor.local.processes import ProcessStarter
from conveyor.runs.advance import RunInputs, advance
from conveyor.runs.context import RunContext

POLL_SECONDS = 0.005


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
    on_progress: Callable[[str], None] = lambda activity: None  # what it does before stages run
    base_dir: Path | None = None  # relative ingest sources are read from here
    stopped_by: int | None = field(default=None, init=False)  # the signal that cancelled the run

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
        """Run to the end. SIGINT (Ctrl-C), SIGTERM or SIGHUP cancels the run: its stages are
        stopped and its record says Cancelled; a second Ctrl-C stops waiting for that (the run
        is then recorded as Interrupted, by the guard). A SIGKILL leaves the guard to stop the
        stages and record the run as Interrupted (`guard`)."""
        stopping = Stopping()
        with stopping.installed():
            try:
                return asyncio.run(self._execute(stopping))
            finally:
                self.stopped_by = stopping.signal

    async def _execute(self, stopping: Stopping) -> RunRecord:
        stopping.attach(asyncio.get_running_loop())
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.status = PipelineRunStatus()
        guard, record = Guard(), None
        try:
            running = await asyncio.to_thread(self._running_record)
            guard.record(self.store.root, running)
            processes = ProcessLauncher(self.starter, self.ctx, self.workdir, guard, stopping.event)
            processes.on_progress = self.on_progress
            inputs = RunInputs(
                timeout_seconds=self.timeout_seconds, resume_from=self.resume_from, use_cache=self.use_cache
            )
            self.on_progress(lookup_line(len(self.spec.stages), self.use_cache))
            try:
                record = await self._until_finished(processes, inputs, stopping, guard, running)
            except asyncio.CancelledError:  # the main task cancelled (asyncio's own Ctrl-C)
                record = await self._until_finished(
                    processes, replace(inputs, cancelled=True), stopping, guard, running
                )
            finally:
                processes.stop_all()
            return record
        finally:
            guard.close(recorded=record is not None)

    def _running_record(self) -> RunRecord:
        """The record of a run under way, in the store from its start (`conveyor runs` shows
        it Running; the guard turns it into Interrupted if `conveyor run` dies)."""
        now = datetime.now(UTC)
        status = PipelineRunStatus(phase=RunPhase.RUNNING, start_time=now)
        return self.ctx.write_record(status, {}, now, self.resume_from)[0]

    async def _until_finished(
        self,
        processes: ProcessLauncher,
        inputs: RunInputs,
        stopping: Stopping,
        guard: Guard,
        running: RunRecord,
    ) -> RunRecord:
        while True:
            if stopping.requested:
                inputs = replace(inputs, cancelled=True)
            step = await advance(self.ctx, processes, self.status, inputs)
            if step.status.model_dump() != self.status.model_dump():
                self.on_change(step.plan)
                guard.record(self.store.root, running.model_copy(update={"stages": step.status.stages}))
            self.on_progress("")
            self.status = step.status
            if step.record is not None:
                return step.record
            await self._until_something_ends(processes, inputs, stopping)

    async def _until_something_ends(
        self, processes: ProcessLauncher, inputs: RunInputs, stopping: Stopping
    ) -> None:
        """Wait until a stage's attempt exits or times out, the run's own timeout is due or a
        signal asks the run to stop: only then can the next step change anything."""
        started = self.status.start_time or datetime.now(UTC)
        limit = inputs.timeout_seconds
        while not processes.any_ended() and not (stopping.requested and not inputs.cancelled):
            if limit is not None and (datetime.now(UTC) - started).total_seconds() > limit:
                return
            await asyncio.sleep(POLL_SECONDS)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopping:
    """A stop asked for by a signal, whether the event loop runs yet or not."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.event = asyncio.Event()

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def ask(self, signum: int, frame: object = None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the stages to stop
        self.signal = signum
        self.event.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Our handler for the stop signals meanwhile (in the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        before = {sig: signal.signal(sig, self.ask) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """From now on, signals reach the loop as callbacks (safe to wake it from)."""
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                loop.add_signal_handler(sig, self.ask, sig)
        if self.requested:
            self.event.set()
