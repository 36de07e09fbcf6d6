"""The operator's work queue: one per-key queue for every kind, one error path.

Watch events and the reconcilers' own "look again in N seconds" become `requeue(key, delay)`.
Like controller-runtime's workqueue, a key is reconciled by one task at a time: a kick that
arrives while it runs makes it run once more afterwards, never twice at once; keys due at the
same time coalesce. A key's state is dropped as soon as it has nothing pending, so nothing
grows with the number of objects ever seen.

Errors: `Gone` (the namespace is being deleted) drops the key; `Transient` looks again after its
delay; `Conflict` (the object changed while we planned) looks again at once; anything else is
logged and retried with exponential back-off per key (reset by a success). Kopf's handlers only
enqueue, so none of this reaches Kopf (no Kopf retries, no finalizers).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from conveyor.errors import Conflict, Gone, Transient
from conveyor.kube.client import MODELDEPLOYMENTS, KubeClient
from conveyor.kube.reconcilers.modeldeployment import ModelDeploymentReconciler
from conveyor.kube.reconcilers.pipeline import PipelineReconciler
from conveyor.kube.reconcilers.pipelinerun import PipelineRunReconciler
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver

log = logging.getLogger("conveyor.operator")

RUN, PIPELINE, MODEL_DEPLOYMENT = "PipelineRun", "Pipeline", "ModelDeployment"
RUN_FINISHED = "Pipeline:run-finished"  # a run of the Pipeline finished: its queue and history
Key = tuple[str, str, str]  # kind, namespace, name
CONFLICT_DELAY = 0.05
MAX_BACKOFF = 300.0


@dataclass
class _Entry:
    """A key with something pending: a timer, a running reconcile, or both."""

    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    again: bool = False  # kicked while running: run once more when done
    failures: int = 0


class Controller:
    def __init__(self, settings: Settings, kube: KubeClient) -> None:
        self.settings = settings
        self.kube = kube
        self.stores = StoreResolver(settings)
        self.runs = PipelineRunReconciler(kube, settings, self.stores)
        self.pipelines = PipelineReconciler(kube, self.stores, self.kick_run)
        self.deployments = ModelDeploymentReconciler(kube, settings, self.stores)
        self._keys: dict[Key, _Entry] = {}

    async def kick_run(self, namespace: str, name: str) -> None:
        self.requeue((RUN, namespace, name), 0)

    def kick(self, kind: str, namespace: str, name: str) -> None:
        self.requeue((kind, namespace, name), 0)

    def requeue(self, key: Key, delay: float) -> None:
        """Reconcile `key` after `delay` seconds, or sooner if already due sooner."""
        entry = self._keys.setdefault(key, _Entry())
        if entry.task is not None and delay == 0:
            entry.again = True
            return
        loop = asyncio.get_running_loop()
        if entry.timer is not None:
            if entry.timer.when() <= loop.time() + delay:
                return
            entry.timer.cancel()
        entry.timer = loop.call_later(delay, self._start, key)

    def pending(self) -> int:
        """Keys with a timer or a reconcile in flight (what a test or a probe may look at)."""
        return len(self._keys)

    def _start(self, key: Key) -> None:
        entry = self._keys[key]
        entry.timer = None
        if entry.task is not None:  # still running: once more when it is done
            entry.again = True
            return
        entry.task = asyncio.get_running_loop().create_task(self._run(key, entry))

    async def _run(self, key: Key, entry: _Entry) -> None:
        delay = await self._reconcile_safely(key, entry)
        entry.task = None
        if entry.again:
            entry.again = False
            delay = 0.0
        if delay is not None:
            self.requeue(key, delay)
        elif entry.timer is None:
            self._keys.pop(key, None)

    async def _reconcile_safely(self, key: Key, entry: _Entry) -> float | None:
        """Reconcile; when to look again (None: not until something changes)."""
        kind, namespace, name = key
        try:
            delay = await self._reconcile(key)
        except Gone:
            log.info("%s %s/%s: its namespace is being deleted", kind, namespace, name)
            return None
        except Conflict:
            return CONFLICT_DELAY
        except Transient as err:
            log.info("%s %s/%s: %s; again in %.1fs", kind, namespace, name, err, err.delay)
            return err.delay
        except Exception:
            entry.failures += 1
            backoff = min(MAX_BACKOFF, self.settings.resync_seconds * 2.0 ** (entry.failures - 1))
            log.exception("reconciling %s %s/%s failed; again in %.0fs", kind, namespace, name, backoff)
            return backoff
        entry.failures = 0
        return delay

    async def _reconcile(self, key: Key) -> float | None:
        kind, namespace, name = key
        if kind == PIPELINE:
            await self.pipelines.reconcile(namespace, name)
            return self.settings.pipeline_resync_seconds
        if kind == RUN_FINISHED:
            await self.pipelines.run_finished(namespace, name)
            return None
        if kind == MODEL_DEPLOYMENT:
            await self.deployments.reconcile(namespace, name)
            return self.settings.drift_seconds
        outcome = await self.runs.reconcile(namespace, name)
        if outcome.finished and outcome.pipeline:
            await self._run_finished(namespace, outcome.pipeline)
        return None if outcome.finished else outcome.requeue

    async def _run_finished(self, namespace: str, pipeline: str) -> None:
        """A run just finished: a queue slot is free, history and the champion may change, so
        its Pipeline and the ModelDeployments serving that pipeline's champion look again."""
        self.kick(RUN_FINISHED, namespace, pipeline)
        for md in await self.kube.list(MODELDEPLOYMENTS, namespace):
            if (md.get("spec", {}).get("model") or {}).get("fromPipeline") == pipeline:
                self.kick(MODEL_DEPLOYMENT, namespace, md["metadata"]["name"])

    async def close(self) -> None:
        for entry in self._keys.values():
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.task is not None:
                entry.task.cancel()
        self._keys.clear()
        await self.kube.close()
