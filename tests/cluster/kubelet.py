"""A process kubelet: a Node whose pods' containers run as local processes.

There is no container runtime on the test machines, so a container's `command`/`args` run from
this checkout (the Python that runs this module, with its `conveyor` on PATH), not from the
image. Otherwise it does a kubelet's job against the real API server:

- registers a Ready Node and binds every unscheduled pod to it (no kube-scheduler runs);
- runs init containers in order, then the containers, each in a private mount namespace with
  its emptyDir/Secret/ConfigMap volumes and its termination-message file bind-mounted where the
  pod says; the environment is the pod's (`env` with `valueFrom`, `envFrom`, `$(VAR)`);
- gives each pod its own loopback address as its IP (processes share one network namespace, so
  a wildcard bind address `0.0.0.0` in a command line means the pod's own address);
- writes full pod status: phase, conditions (Ready from `httpGet` readiness probes), container
  states with exit codes, restart counts and termination messages;
- honours `restartPolicy` with back-off, and graceful deletion (SIGTERM, the grace period,
  SIGKILL, then the final delete).

`--instant` completes every pod at once without running it (benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import os
import re
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.cluster.api import Api

NODE = "conveyor-test-node"
TERMINATION_HOST_PLACEHOLDER = "/dev/termination-log"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones kept as written."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


@dataclass
class ContainerRun:
    spec: dict[str, Any]
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    ready: bool = False
    restarts: int = 0
    proc: asyncio.subprocess.Process | None = None
    last: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])


@dataclass
class PodRun:
    pod: dict[str, Any]
    ip: str
    dir: Path
    containers: list[ContainerRun]
    init: list[ContainerRun]
    phase: str = "Pending"
    started: str = field(default_factory=now)
    stopping: bool = False
    task: asyncio.Task[None] | None = None
    stopper: asyncio.Task[None] | None = None
    reason: tuple[str, str] | None = None  # the pod's status.reason and message
    initialized: bool = False

    @property
    def key(self) -> str:
        meta = self.pod["metadata"]
        return f"{meta['namespace']}/{meta['name']}"


class Kubelet:
    def __init__(self, api: Api, root: Path, instant: bool = False, node: str = NODE) -> None:
        self.api = api
        self.root = root
        self.instant = instant
        self.node = node
        self.pods: dict[str, PodRun] = {}
        # 127.N.X.Y, N from the process id: two clusters on one machine hand out other addresses
        net = os.getpid() % 200 + 20
        self._ips = (f"127.{net}.{i // 250 + 1}.{i % 250 + 2}" for i in itertools.count())
        self._env_base = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "LANG": "C.UTF-8",
        }

    # ---------------------------------------------------------------- node and scheduling
    async def register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.node,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": labels}}
        await self.api.call("POST", "/api/v1/nodes", node, ok=(409,))
        t = now()

        def cond(kind: str, status: str, reason: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": reason,
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            }

        res = {"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "500Gi"}
        status = {
            "capacity": res,
            "allocatable": res,
            "conditions": [
                cond("Ready", "True", "KubeletReady"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "process",
                "systemUUID": "process",
                "bootID": "process",
                "kernelVersion": os.uname().release,
                "osImage": "process kubelet",
                "containerRuntimeVersion": "process://1",
                "kubeletVersion": "v1.37.2",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        await self.api.call(
            "PATCH",
            f"/api/v1/nodes/{self.node}/status",
            {"status": status},
            content_type="application/strategic-merge-patch+json",
        )

    async def bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        await self.api.call(
            "POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body, ok=(404, 409)
        )

    async def serve(self) -> None:
        await self.register()
        await asyncio.gather(
            self.api.watch("/api/v1/pods", {"fieldSelector": "spec.nodeName="}, self._on_unscheduled),
            self.api.watch("/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.node}"}, self._on_pod),
        )

    async def _on_unscheduled(self, kind: str, pod: dict[str, Any]) -> None:
        if kind in ("ADDED", "MODIFIED") and not pod["metadata"].get("deletionTimestamp"):
            await self.bind(pod)

    async def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        run = self.pods.get(uid)
        if kind == "DELETED":
            if run is not None:
                run.stopping = True
                await self._kill(run, 0)
                self.pods.pop(uid, None)
                shutil.rmtree(run.dir, ignore_errors=True)
            return
        if pod["metadata"].get("deletionTimestamp"):
            if run is None:
                await self._final_delete(pod)
            elif not run.stopping:
                run.stopping = True
                grace = pod["metadata"].get("deletionGracePeriodSeconds", 30)
                run.stopper = asyncio.create_task(self._terminate(run, float(grace)))
            return
        if run is None and pod.get("status", {}).get("phase", "Pending") == "Pending":
            run = PodRun(
                pod=pod,
                ip=next(self._ips),
                dir=self.root / uid,
                containers=[ContainerRun(c) for c in pod["spec"]["containers"]],
                init=[ContainerRun(c) for c in pod["spec"].get("initContainers", [])],
            )
            self.pods[uid] = run
            run.task = asyncio.create_task(self._run_pod(run))

    # ---------------------------------------------------------------- running a pod
    async def _run_pod(self, run: PodRun) -> None:
        try:
            if self.instant:
                for c in run.containers:
                    c.state = {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": now(),
                            "finishedAt": now(),
                        }
                    }
                run.phase = "Succeeded"
                await self._report(run)
                return
            run.dir.mkdir(parents=True, exist_ok=True)
            await self._report(run)
            for c in run.init:
                code = await self._run_container(run, c)
                if code != 0 and run.pod["spec"].get("restartPolicy", "Always") == "Never":
                    run.phase = "Failed"
                    await self._report(run)
                    return
            run.initialized = True
            run.phase = "Running"
            deadline = run.pod["spec"].get("activeDeadlineSeconds")
            watchdog = asyncio.create_task(self._deadline(run, float(deadline))) if deadline else None
            results = await asyncio.gather(*(self._keep_running(run, c) for c in run.containers))
            if run.reason is not None:  # the deadline killed it
                run.phase = "Failed"
                await self._report(run)
            elif not run.stopping:
                run.phase = "Succeeded" if all(r == 0 for r in results) else "Failed"
                await self._report(run)
            if watchdog is not None:
                watchdog.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a kubelet reports what broke in the pod, and carries on
            print(f"kubelet: pod {run.key}: {err!r}", file=sys.stderr, flush=True)

    async def _deadline(self, run: PodRun, seconds: float) -> None:
        """The pod's activeDeadlineSeconds, counted from its start: kill it and fail it."""
        await asyncio.sleep(seconds)
        run.stopping = True
        run.reason = ("DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
        await self._kill(run, 0)

    async def _keep_running(self, run: PodRun, c: ContainerRun) -> int:
        policy = run.pod["spec"].get("restartPolicy", "Always")
        delay = 1.0
        while True:
            code = await self._run_container(run, c)
            if run.stopping or policy == "Never" or (policy == "OnFailure" and code == 0):
                return code
            c.restarts += 1
            c.last = c.state
            c.state = {
                "waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {delay:.0f}s restarting"}
            }
            await self._report(run)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _run_container(self, run: PodRun, c: ContainerRun) -> int:
        spec = c.spec
        env = await self._environment(run, spec)
        argv = [expand(a, env) for a in [*spec.get("command", []), *spec.get("args", [])]]
        argv = [run.ip if a == "0.0.0.0" else a for a in argv]
        cdir = run.dir / c.name
        cdir.mkdir(parents=True, exist_ok=True)
        log = cdir / f"{c.restarts}.log"
        term = cdir / "termination-log"
        term.write_text("")
        if not argv:
            c.state = {
                "waiting": {
                    "reason": "CreateContainerError",
                    "message": "a process kubelet needs the container's command",
                }
            }
            await self._report(run)
            return 1
        mounts = await self._mounts(run, spec, term)
        script = "".join(f"mount --bind {shlex.quote(src)} {shlex.quote(dst)} && " for src, dst in mounts)
        started = now()
        with open(log, "wb") as out:
            c.proc = await asyncio.create_subprocess_exec(
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script + 'exec "$@"',
                "sh",
                *argv,
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=spec.get("workingDir") or str(cdir),
                start_new_session=True,
            )
        c.state = {"running": {"startedAt": started}}
        c.ready = "readinessProbe" not in spec
        await self._report(run)
        probe = asyncio.create_task(self._probe(run, c)) if "readinessProbe" in spec else None
        code = await c.proc.wait()
        if probe is not None:
            probe.cancel()
        c.ready = False
        code = 128 + -code if code < 0 else code
        message = term.read_text(errors="replace")[-4096:]
        if not message and code != 0 and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = log.read_text(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now(),
        }
        if message:
            terminated["message"] = message
        c.state = {"terminated": terminated}
        return code

    async def _mounts(self, run: PodRun, spec: dict[str, Any], term: Path) -> list[tuple[str, str]]:
        """(host source, path in the container) for the termination log and the volumes."""
        mounts = []
        path = spec.get("terminationMessagePath", TERMINATION_HOST_PLACEHOLDER)
        if Path(path).parent.is_dir():
            if not Path(path).exists():
                Path(path).touch()  # the mount point, as a kubelet makes it on the host
            mounts.append((str(term), path))
        volumes = {v["name"]: v for v in run.pod["spec"].get("volumes", [])}
        # Deepest first, so a mount over /tmp cannot hide the sources of the ones after it; a
        # path above this checkout or this Python is left alone (it would hide the program).
        keep = [Path(sys.prefix).resolve(), Path(__file__).resolve()]
        for mount in sorted(spec.get("volumeMounts", []), key=lambda m: -len(Path(m["mountPath"]).parts)):
            if any(k.is_relative_to(mount["mountPath"]) for k in keep):
                continue
            vol = volumes.get(mount["name"], {})
            src = run.dir / "volumes" / mount["name"]
            if not src.exists():
                src.mkdir(parents=True)
                await self._fill_volume(run, vol, src)
            if Path(mount["mountPath"]).is_dir():
                mounts.append((str(src), mount["mountPath"]))
        return mounts

    async def _fill_volume(self, run: PodRun, vol: dict[str, Any], dest: Path) -> None:
        ns = run.pod["metadata"]["namespace"]
        for kind, plural in (("secret", "secrets"), ("configMap", "configmaps")):
            if kind in vol:
                name = vol[kind].get("secretName") or vol[kind].get("name")
                obj = await self.api.call("GET", f"/api/v1/namespaces/{ns}/{plural}/{name}", ok=(404,)) or {}
                for key, value in (obj.get("data") or {}).items():
                    (dest / key).write_bytes(base64.b64decode(value) if kind == "secret" else value.encode())

    async def _environment(self, run: PodRun, spec: dict[str, Any]) -> dict[str, str]:
        meta = run.pod["metadata"]
        ns = meta["namespace"]
        env = dict(self._env_base)
        env["HOSTNAME"] = meta["name"]
        for source in spec.get("envFrom", []):
            for kind, plural in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
                if kind in source:
                    obj = (
                        await self.api.call(
                            "GET", f"/api/v1/namespaces/{ns}/{plural}/{source[kind]['name']}", ok=(404,)
                        )
                        or {}
                    )
                    for key, value in (obj.get("data") or {}).items():
                        value = base64.b64decode(value).decode() if kind == "secretRef" else value
                        env[source.get("prefix", "") + key] = value
        fields = {
            "metadata.name": meta["name"],
            "metadata.namespace": ns,
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.node,
            "spec.serviceAccountName": run.pod["spec"].get("serviceAccountName", ""),
            "status.podIP": run.ip,
            "status.hostIP": "127.0.0.1",
        }
        for item in spec.get("env", []):
            if "value" in item:
                env[item["name"]] = expand(item["value"], env)
                continue
            ref = item.get("valueFrom", {})
            if "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
                env[item["name"]] = (
                    (meta.get(m.group(1)) or {}).get(m.group(2), "") if m else fields.get(path, "")
                )
            for kind, plural in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
                if kind in ref:
                    obj = (
                        await self.api.call(
                            "GET", f"/api/v1/namespaces/{ns}/{plural}/{ref[kind]['name']}", ok=(404,)
                        )
                        or {}
                    )
                    value = (obj.get("data") or {}).get(ref[kind]["key"])
                    if value is not None:
                        env[item["name"]] = (
                            base64.b64decode(value).decode() if kind == "secretKeyRef" else value
                        )
        env.setdefault("HOME", str(run.dir))
        return env

    async def _probe(self, run: PodRun, c: ContainerRun) -> None:
        probe = c.spec["readinessProbe"]
        get = probe.get("httpGet")
        period = float(probe.get("periodSeconds", 10))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        port = get.get("port") if get else None
        if isinstance(port, str):
            port = next((p["containerPort"] for p in c.spec.get("ports", []) if p.get("name") == port), None)
        url = f"http://{run.ip}:{port}{get.get('path', '/')}" if get else None
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=probe.get("timeoutSeconds", 1))
        ) as http:
            while True:
                ok = False
                if url is not None:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                        async with http.get(url) as resp:
                            ok = 200 <= resp.status < 400
                if ok != c.ready:
                    c.ready = ok
                    await self._report(run)
                await asyncio.sleep(min(period, 1.0) if not ok else period)

    # ---------------------------------------------------------------- status
    def _status(self, run: PodRun) -> dict[str, Any]:
        t = now()

        def cond(kind: str, ok: bool) -> dict[str, Any]:
            return {
                "type": kind,
                "status": "True" if ok else "False",
                "lastProbeTime": None,
                "lastTransitionTime": t,
            }

        def cstatus(c: ContainerRun) -> dict[str, Any]:
            out = {
                "name": c.name,
                "image": c.spec.get("image", ""),
                "imageID": "",
                "containerID": f"process://{c.name}",
                "ready": c.ready,
                "started": "running" in c.state,
                "restartCount": c.restarts,
                "state": c.state,
            }
            if c.last:
                out["lastState"] = c.last
            return out

        ready = run.phase == "Running" and all(c.ready for c in run.containers)
        status = {
            "phase": run.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": run.ip,
            "podIPs": [{"ip": run.ip}],
            "startTime": run.started,
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", run.initialized or not run.init),
                cond("ContainersReady", ready),
                cond("Ready", ready),
                cond("PodScheduled", True),
            ],
            "initContainerStatuses": [cstatus(c) for c in run.init],
            "containerStatuses": [cstatus(c) for c in run.containers],
        }
        if run.reason:
            status["reason"], status["message"] = run.reason
        return status

    async def _report(self, run: PodRun) -> None:
        meta = run.pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        await self.api.call(
            "PATCH",
            path,
            {"metadata": {"uid": meta["uid"]}, "status": self._status(run)},
            content_type="application/merge-patch+json",
            ok=(404, 409),
        )

    # ---------------------------------------------------------------- stopping
    async def _kill(self, run: PodRun, grace: float) -> None:
        procs = [c.proc for c in [*run.init, *run.containers] if c.proc and c.proc.returncode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        if procs and grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), grace)
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        await asyncio.gather(*(p.wait() for p in procs))

    async def _terminate(self, run: PodRun, grace: float) -> None:
        await self._kill(run, grace)
        if run.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(run.task, 5)
        if run.phase not in ("Succeeded", "Failed"):
            run.phase = "Failed"
        await self._report(run)
        await self._final_delete(run.pod)

    async def _final_delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        await self.api.call(
            "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body, ok=(404, 409)
        )

    async def shutdown(self) -> None:
        await asyncio.gather(*(self._kill(r, 2) for r in self.pods.values()))


async def _main(args: argparse.Namespace) -> None:
    api = Api.from_kubeconfig(Path(args.kubeconfig))
    kubelet = Kubelet(api, Path(args.root), instant=args.instant)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(kubelet.serve())
    await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    await kubelet.shutdown()
    await api.close()
    if task.done() and not task.cancelled() and task.exception():
        raise task.exception()  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--root", required=True, help="folder for pods' files")
    parser.add_argument("--instant", action="store_true", help="complete every pod at once, running nothing")
    args = parser.parse_args()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
