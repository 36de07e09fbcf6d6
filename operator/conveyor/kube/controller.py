"""The operator's state, kept in Kopf's memo: settings, the API client, the reconcilers and a
requeue timer per object (like controller-runtime's RequeueAfter)."""

from __future__ import annotations

import asyncio
import logging

from conveyor.kube.client import ApiError, Connection, KubeClient
from conveyor.kube.deployments import DeploymentReconciler
from conveyor.kube.pipelines import PipelineReconciler
from conveyor.kube.runs import RunReconciler
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver

log = logging.getLogger("conveyor.operator")

RUN, PIPELINE, MODEL_DEPLOYMENT = "PipelineRun", "Pipeline", "ModelDeployment"
Key = tuple[str, str, str]  # kind, namespace, name


class Controller:
    def __init__(self, settings: Settings, kube: KubeClient) -> None:
        self.settings = settings
        self.kube = kube
        self.stores = StoreResolver(settings)
        self.runs = RunReconciler(kube, settings, self.stores)
        self.pipelines = PipelineReconciler(kube, self.stores, self.kick_run)
        self.deployments = DeploymentReconciler(kube, settings, self.stores)
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_environment(cls) -> Controller:
        return cls(Settings.from_env(), KubeClient(Connection.from_environment()))

    async def reconcile_run(self, namespace: str, name: str) -> None:
        outcome = await self.runs.reconcile(namespace, name)
        if outcome.finished:
            self._cancel_timer(namespace, name)
            if outcome.pipeline:  # it just finished: a slot is free, history and champion may change
                await self.pipelines.run_finished(namespace, outcome.pipeline)
                await self._follow_champion(namespace, outcome.pipeline)
        elif outcome.requeue is not None:
            self.requeue(namespace, name, outcome.requeue)

    async def _follow_champion(self, namespace: str, pipeline: str) -> None:
        """Deployments serving this pipeline's champion look again: it may have changed."""
        from conveyor.kube.client import MODELDEPLOYMENTS

        for md in await self.kube.list(MODELDEPLOYMENTS, namespace):
            if (md.get("spec", {}).get("model") or {}).get("fromPipeline") == pipeline:
                await self.deployments.reconcile(namespace, md["metadata"]["name"])

    async def kick_run(self, namespace: str, name: str) -> None:
        self.requeue(namespace, name, 0)

    def kick(self, kind: str, namespace: str, name: str) -> None:
        self.requeue(namespace, name, 0, kind)

    def requeue(self, namespace: str, name: str, delay: float, kind: str = RUN) -> None:
        """Reconcile (kind, namespace, name) after `delay` seconds, or sooner if already due."""
        loop = asyncio.get_running_loop()
        key = (kind, namespace, name)
        current = self._timers.get(key)
        if current is not None and current.when() <= loop.time() + delay:
            return
        if current is not None:
            current.cancel()
        self._timers[key] = loop.call_later(delay, self._spawn, key)

    def _spawn(self, key: Key) -> None:
        self._timers.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._safe_reconcile(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _safe_reconcile(self, key: Key) -> None:
        kind, namespace, name = key
        try:
            if kind == RUN:
                await self.reconcile_run(namespace, name)
            elif kind == PIPELINE:
                await self.pipelines.reconcile(namespace, name)
                self.requeue(namespace, name, self.settings.pipeline_resync_seconds, kind)
            else:
                await self.deployments.reconcile(namespace, name)
                self.requeue(namespace, name, self.settings.drift_seconds, kind)
        except Exception as err:
            if isinstance(err, ApiError) and err.status == 403 and "being terminated" in str(err):
                # its namespace is going: the object goes with it, nothing to retry
                log.info("%s %s/%s: its namespace is being deleted", kind, namespace, name)
                return
            log.exception("reconciling %s %s/%s failed; retrying", kind, namespace, name)
            self.requeue(namespace, name, self.settings.resync_seconds, kind)

    def _cancel_timer(self, namespace: str, name: str) -> None:
        timer = self._timers.pop((RUN, namespace, name), None)
        if timer is not None:
            timer.cancel()

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.kube.close()
