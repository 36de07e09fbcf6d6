"""The Job controller and the kubelet, played by the tests.

For every Job the operator creates in the emulator, this runs the container's command and
environment as a local process (`conveyor` means this Python's `-m conveyor`), keeps a Pod
object with the container's state (termination message included), retries failed pods up to
`backoffLimit`, kills the pod at `activeDeadlineSeconds`, and writes the Job's status
(`active`, `succeeded`, `failed`, `startTime`, conditions `Complete`/`Failed`) the way the
Job controller does. A Job deleted while running has its process killed.

`mode="instant"` marks every Job complete at once without running anything (benchmarks).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.kube.cluster import ApiServer, now_iso

JOBS = "batch/v1/jobs"


@dataclass
class Kubelet:
    api: ApiServer
    namespace: str = "default"
    mode: str = "run"  # run | instant
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    poll: float = 0.02
    seen: set[str] = field(default_factory=set)
    started: list[str] = field(default_factory=list)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _loop: asyncio.Task[None] | None = None
    max_parallel: int = 8

    async def __aenter__(self) -> Kubelet:
        self._sem = asyncio.Semaphore(self.max_parallel)
        self._loop = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.cancel()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(self._loop, *self._tasks.values(), return_exceptions=True)

    async def _watch(self) -> None:
        known: set[str] = set()
        while True:
            names = self.api.names_of(JOBS, self.namespace)
            for name in names:
                if name in known:
                    continue
                job = self.api.get_object(JOBS, self.namespace, name)
                uid = job["metadata"]["uid"] if job else None
                if job is None or uid in self.seen:
                    continue
                known.add(name)
                self.seen.add(uid)
                self.started.append(name)
                self._tasks[uid] = asyncio.create_task(self._run_job(job))
            known &= set(names)  # a deleted Job's name may come back as a new Job
            await asyncio.sleep(self.poll)

    # the Job controller ----------------------------------------------------------------------
    async def _patch_job(self, name: str, status: dict[str, Any]) -> None:
        url = f"/apis/batch/v1/namespaces/{self.namespace}/jobs/{name}/status"
        resp = await self.api.patch(
            url, json={"status": status}, headers={"Content-Type": "application/merge-patch+json"}
        )
        resp.release()

    def _job_exists(self, job: dict[str, Any]) -> bool:
        current = self.api.get_object(JOBS, self.namespace, job["metadata"]["name"])
        return current is not None and current["metadata"]["uid"] == job["metadata"]["uid"]

    async def _run_job(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        spec = job["spec"]
        start = now_iso()
        if self.mode == "instant":
            await self._patch_job(
                name,
                {
                    "startTime": start,
                    "succeeded": 1,
                    "completionTime": now_iso(),
                    "conditions": [_cond("Complete")],
                },
            )
            return
        async with self._sem:
            deadline = spec.get("activeDeadlineSeconds")
            limit = int(spec.get("backoffLimit", 6))
            loop = asyncio.get_running_loop()
            ends_at = loop.time() + deadline if deadline else None
            failed = 0
            await self._patch_job(name, {"startTime": start, "active": 1})
            while True:
                code = await self._run_pod(job, failed, ends_at)
                if code is None:  # deadline or deletion
                    if self._job_exists(job):
                        await self._patch_job(
                            name,
                            {
                                "active": 0,
                                "failed": failed + 1,
                                "conditions": [
                                    _cond(
                                        "Failed",
                                        "DeadlineExceeded",
                                        "Job was active longer than specified deadline",
                                    )
                                ],
                            },
                        )
                    return
                if code == 0:
                    await self._patch_job(
                        name,
                        {
                            "active": 0,
                            "succeeded": 1,
                            "completionTime": now_iso(),
                            "conditions": [_cond("Complete")],
                        },
                    )
                    return
                failed += 1
                if failed > limit:
                    await self._patch_job(
                        name,
                        {
                            "active": 0,
                            "failed": failed,
                            "conditions": [
                                _cond(
                                    "Failed",
                                    "BackoffLimitExceeded",
                                    "Job has reached the specified backoff limit",
                                )
                            ],
                        },
                    )
                    return
                await self._patch_job(name, {"active": 1, "failed": failed})

    # the kubelet -----------------------------------------------------------------------------
    async def _run_pod(self, job: dict[str, Any], attempt: int, ends_at: float | None) -> int | None:
        pod_name = f"{job['metadata']['name']}-{attempt}"
        template = job["spec"]["template"]
        container = template["spec"]["containers"][0]
        labels = {
            **template["metadata"].get("labels", {}),
            "job-name": job["metadata"]["name"],
            "batch.kubernetes.io/job-name": job["metadata"]["name"],
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": self.namespace,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job["metadata"]["name"],
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": {"phase": "Running"},
        }
        resp = await self.api.post(f"/api/v1/namespaces/{self.namespace}/pods", json=pod)
        resp.release()
        with tempfile.TemporaryDirectory(prefix="kubelet-") as tmp:
            termlog = Path(tmp) / "termination-log"
            env = {
                **self.base_env,
                **self._env(container),
                "HOME": tmp,
                "CONVEYOR_TERMINATION_LOG": str(termlog),
                "TMPDIR": tmp,
            }
            argv = [*container.get("command", []), *container.get("args", [])]
            if argv[:1] == ["conveyor"]:
                argv = [sys.executable, "-m", "conveyor", *argv[1:]]
            log = Path(tmp) / "log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True
                )
                code = await self._wait(proc, job, ends_at)
            message = termlog.read_text() if termlog.exists() else ""
            if not message.strip() and code not in (0, None):
                message = "\n".join(
                    log.read_text(errors="replace").splitlines()[-20:]
                )  # FallbackToLogsOnError
        state = {
            "terminated": {
                "exitCode": code if code is not None else 137,
                "message": message,
                "reason": "Completed" if code == 0 else "Error",
                "finishedAt": now_iso(),
            }
        }
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": container["name"], "state": state}],
        }
        resp = await self.api.patch(
            f"/api/v1/namespaces/{self.namespace}/pods/{pod_name}/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        resp.release()
        return code

    async def _wait(
        self, proc: asyncio.subprocess.Process, job: dict[str, Any], ends_at: float | None
    ) -> int | None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(proc.wait(), timeout=0.05)
            if (ends_at is not None and loop.time() > ends_at) or not self._job_exists(job):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                return None

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            name = source.get("secretRef", {}).get("name")
            secret = self.api.get_object("v1/secrets", self.namespace, name) if name else None
            if secret is None:
                raise RuntimeError(f"pod needs Secret {name!r}, which does not exist")
            for key, value in (secret.get("data") or {}).items():
                env[key] = base64.b64decode(value).decode()
            env.update(secret.get("stringData") or {})
        return env


def _cond(type_: str, reason: str = "", message: str = "") -> dict[str, Any]:
    cond = {"type": type_, "status": "True", "lastTransitionTime": now_iso(), "lastProbeTime": now_iso()}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


@dataclass
class DeploymentController:
    """Plays the Deployment controller, kubelet and kube-proxy for model servers: runs the
    pod template's command (`conveyor serve ...`) as a local process on a port the test chose,
    restarts it when the template changes (a rollout), and writes the Deployment's status once
    the server answers its readiness probe."""

    api: ApiServer
    ports: dict[str, int]
    namespace: str = "default"
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    procs: dict[str, tuple[str, asyncio.subprocess.Process]] = field(default_factory=dict)
    rollouts: list[str] = field(default_factory=list)

    async def __aenter__(self) -> DeploymentController:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        for _, proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _loop(self) -> None:
        while True:
            for name in self.api.names_of("apps/v1/deployments", self.namespace):
                dep = self.api.get_object("apps/v1/deployments", self.namespace, name)
                if dep is not None and name in self.ports:
                    await self._sync(name, dep)
            await asyncio.sleep(0.1)

    async def _sync(self, name: str, dep: dict[str, Any]) -> None:
        import json as _json

        template = _json.dumps(dep["spec"]["template"], sort_keys=True)
        running = self.procs.get(name)
        if running is not None and running[0] == template:
            return
        if running is not None:
            running[1].kill()
            await running[1].wait()
        container = dep["spec"]["template"]["spec"]["containers"][0]
        args = list(container.get("args", []))
        args[args.index("--port") + 1] = str(self.ports[name])
        args[args.index("--host") + 1] = "127.0.0.1"
        env = {**self.base_env, **Kubelet(self.api, self.namespace)._env(container)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor",
            *args,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.procs[name] = (template, proc)
        self.rollouts.append(name)
        await self._wait_ready(self.ports[name], proc)
        generation = dep["metadata"].get("generation", 1)
        replicas = dep["spec"].get("replicas", 1)
        status = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "lastUpdateTime": now_iso(),
                    "lastTransitionTime": now_iso(),
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "lastUpdateTime": now_iso(),
                    "lastTransitionTime": now_iso(),
                },
            ],
        }
        resp = await self.api.patch(
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{name}/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        resp.release()

    async def _wait_ready(self, port: int, proc: asyncio.subprocess.Process) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if proc.returncode is not None:
                    raise RuntimeError("the model server exited")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/v2/health/ready") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the model server never became ready")
