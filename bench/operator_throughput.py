"""Operator throughput: 100 PipelineRuns of a 5-stage chain on a real control plane.

etcd, kube-apiserver and kube-controller-manager run as local processes (tests/cluster), the
chart is installed with `helm install`, and the process kubelet in `--instant` mode marks every
pod Succeeded at once (the Job controller then completes the Job). The operator is a separate
`conveyor operator --all-namespaces` process logged in with a token of the chart's
ServiceAccount; its peak RSS is read from /proc. S3 is moto in its own process. Baseline, in
the same run against the same cluster: a bare controller in this process that creates each
run's 5 Jobs in a chain, each when a watch shows the previous one succeeded.

Reported: runs/min; the stage hand-off (predecessor Job completed -> next Job created) from the
audit log (microseconds) and from the objects' timestamps (1 s resolution); the operator's API
calls (audit log) and S3 requests per run; its peak memory; CPU seconds per process.

Targets: 100 runs < 60 s, hand-off median < 0.5 s and p95 < 1.5 s, operator memory < 150 MB.
Usage: python bench/operator_throughput.py [--runs 100]   (BENCH_KEEP=1 keeps the cluster's folder;
BENCH_PROFILE="-m cProfile -o FILE" profiles the operator)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster.api import Api  # noqa: E402
from tests.cluster.cluster import CREDENTIALS_SECRET, OPERATOR_SA, RELEASE_NAMESPACE, Cluster  # noqa: E402
from tests.cluster.controlplane import free_port, stop_process  # noqa: E402

NS = "bench"
STAGES = ["a", "b", "c", "d", "e"]  # a -> b -> c -> d -> e
OPERATOR = f"system:serviceaccount:{RELEASE_NAMESPACE}:{OPERATOR_SA}"
WATCHED = ("pipelineruns", "pipelines", "modeldeployments", "jobs", "deployments")
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
GROUP = f"/apis/conveyor.dev/v1alpha1/namespaces/{NS}"
S3_REQUEST = re.compile(r'\] "([A-Z]+) /')  # moto's request log


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def what(event: dict[str, Any]) -> str:
    """`verb resource[/subresource]` of an audit event."""
    ref = event.get("objectRef", {})
    return f"{event['verb']} " + "/".join(filter(None, (ref.get("resource"), ref.get("subresource"))))


def stats(values: list[float]) -> str:
    v = sorted(values) or [float("nan")]
    return f"median {v[len(v) // 2] * 1000:.0f} ms, p95 {v[int(0.95 * (len(v) - 1))] * 1000:.0f} ms"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_peak_mb(pid: int) -> float:
    return int(re.findall(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())[0]) / 1024


def obj(kind: str, name: str, api: str = "v1", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, **fields}


def previous(name: str) -> str | None:
    """The Job of the stage before this one in the chain (`run0-c` -> `run0-b`)."""
    run, _, stage = name.rpartition("-")
    i = STAGES.index(stage)
    return f"{run}-{STAGES[i - 1]}" if i else None


async def setup_namespace(kube: Api) -> None:
    await kube.call("POST", "/api/v1/namespaces", obj("Namespace", NS))
    data = {k: base64.b64encode(b"bench").decode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    secret = obj("Secret", CREDENTIALS_SECRET, data=data)
    secret["metadata"]["labels"] = {"conveyor.dev/credentials": "true"}  # opted in, or no Job is made
    await kube.call("POST", f"/api/v1/namespaces/{NS}/secrets", secret)
    for _ in range(300):  # pods are refused until the namespace's default ServiceAccount exists
        if await kube.call("GET", f"/api/v1/namespaces/{NS}/serviceaccounts/default", ok=(404,)):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("no default ServiceAccount in the bench namespace")


async def bare_controller(kube: Api, runs: int) -> float:
    """The floor: a watch on Jobs; when one has succeeded, create its run's next Job."""
    done, advanced, finished, tasks = asyncio.Event(), set(), set(), set()

    async def create(name: str) -> None:
        pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
        job = obj("Job", name, "batch/v1", spec={"backoffLimit": 0, "template": {"spec": pod}})
        await kube.call("POST", JOBS, job | {"metadata": {"name": name, "labels": {"bench": "bare"}}})

    async def on_job(kind: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        if name in advanced or not (job.get("status") or {}).get("succeeded"):
            return
        advanced.add(name)
        run, _, stage = name.rpartition("-")
        if stage == STAGES[-1]:
            finished.add(run)
            if len(finished) == runs:
                done.set()
        else:  # off the watch loop, as a controller's worker would
            tasks.add(task := asyncio.create_task(create(f"{run}-{STAGES[STAGES.index(stage) + 1]}")))
            task.add_done_callback(tasks.discard)

    start = time.perf_counter()
    watch = asyncio.create_task(kube.watch(JOBS, {"labelSelector": "bench=bare"}, on_job))
    await asyncio.gather(*(create(f"bare{i}-{STAGES[0]}") for i in range(runs)))
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - start
    watch.cancel()
    return elapsed


async def conveyor_runs(kube: Api, runs: int, operator: subprocess.Popen[bytes]) -> float:
    stages = [
        {"name": s, "image": "busybox", "command": ["true"], "cache": False}
        | ({"dependsOn": [STAGES[i - 1]]} if i else {})
        for i, s in enumerate(STAGES)
    ]
    pipeline = obj("Pipeline", "five", "conveyor.dev/v1alpha1", spec={"stages": stages})
    await kube.call("POST", f"{GROUP}/pipelines", pipeline)
    succeeded: set[str] = set()

    async def on_run(kind: str, run: dict[str, Any]) -> None:
        if (run.get("status") or {}).get("phase") == "Succeeded":
            succeeded.add(run["metadata"]["name"])

    def run_of(i: int) -> dict[str, Any]:
        return obj("PipelineRun", f"run{i}", "conveyor.dev/v1alpha1", spec={"pipelineRef": {"name": "five"}})

    start = time.perf_counter()
    watch = asyncio.create_task(kube.watch(f"{GROUP}/pipelineruns", {}, on_run))
    await asyncio.gather(*(kube.call("POST", f"{GROUP}/pipelineruns", run_of(i)) for i in range(runs)))
    while len(succeeded) < runs and operator.poll() is None and time.perf_counter() - start < 600:
        await asyncio.sleep(0.02)
    if len(succeeded) < runs:
        raise SystemExit(f"{len(succeeded)} of {runs} runs succeeded; operator exit code {operator.poll()}")
    elapsed = time.perf_counter() - start
    watch.cancel()
    return elapsed


def audit_handoffs(events: list[dict[str, Any]], prefix: str) -> tuple[list[float], ...]:
    """From the audit log: (the Job controller's last status write of the predecessor before
    the create, i.e. the one that completed it) -> (the create request); for the operator also
    split at its last GET of the run before the create (the reconcile that created the Job)."""
    created, writes, gets = {}, defaultdict(list), defaultdict(list)
    for e in events:
        ref, verb = e.get("objectRef", {}), e["verb"]
        name = ref.get("name") or e.get("requestObject", {}).get("metadata", {}).get("name", "")
        if not name.startswith(prefix) or e.get("responseStatus", {}).get("code") not in (200, 201):
            continue
        if ref.get("resource") == "jobs" and verb == "create":
            created[name] = ts(e["requestReceivedTimestamp"])
        elif (ref.get("resource"), ref.get("subresource")) == ("jobs", "status") and verb != "get":
            writes[name].append(ts(e["stageTimestamp"]))
        elif ref.get("resource") == "pipelineruns" and verb == "get" and e["user"]["username"] == OPERATOR:
            gets[name].append(ts(e["requestReceivedTimestamp"]))
    total, reaction, work = [], [], []
    for name, at in created.items():
        done = max((w for w in writes.get(previous(name) or "", []) if w <= at), default=None)
        if done is not None:
            total.append(at - done)
            got = max((g for g in gets.get(name.rpartition("-")[0], []) if g <= at), default=done)
            reaction.append(max(0.0, got - done))  # 0: that reconcile began before the write
            work.append(at - max(got, done))
    return total, reaction, work


def object_handoffs(jobs: list[dict[str, Any]], prefix: str) -> list[float]:
    by_name = {j["metadata"]["name"]: j for j in jobs if j["metadata"]["name"].startswith(prefix)}
    out = []
    for name, job in by_name.items():
        if done := (by_name.get(previous(name) or "", {}).get("status") or {}).get("completionTime"):
            out.append(ts(job["metadata"]["creationTimestamp"]) - ts(done))
    return out


async def bench(cluster: Cluster, runs: int, moto: int) -> None:
    kube = Api.from_kubeconfig(cluster.admin_kubeconfig)
    await setup_namespace(kube)
    assert cluster.kubelet is not None
    pids = {name: p.pid for name, p in cluster.plane.procs.items()}
    pids |= {"kubelet": cluster.kubelet.pid, "moto": moto, "bench": os.getpid()}
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    bare = await bare_controller(kube, runs)
    cpu_bare = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG", "CONVEYOR_"))}
    metrics_port, log = free_port(), cluster.root / "operator.log"
    env |= {
        "KUBECONFIG": str(cluster.operator_kubeconfig),
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CONVEYOR_STORE": "s3://bench/conveyor",
        "CONVEYOR_S3_ENDPOINT": cluster.s3_endpoint,
        "CONVEYOR_CREDENTIALS_SECRET": CREDENTIALS_SECRET,
        "CONVEYOR_METRICS_PORT": str(metrics_port),
        "CONVEYOR_HEALTH_PORT": str(free_port()),
    }
    python = [sys.executable, *os.environ.get("BENCH_PROFILE", "").split()]
    operator = subprocess.Popen(
        [*python, "-m", "conveyor", "operator", "--all-namespaces"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    try:
        for _ in range(300):  # started: the audit log shows it watching all its kinds
            text = (cluster.plane.root / "audit.log").read_text().splitlines()
            mine = [x for x in text if OPERATOR in x and '"verb":"watch"' in x]
            if all(any(f'"resource":"{r}"' in x for x in mine) for r in WATCHED):
                break
            if operator.poll() is not None:
                raise SystemExit(f"the operator exited: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        pids["operator"] = operator.pid
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        t_start = time.time()
        elapsed = await conveyor_runs(kube, runs, operator)
        await asyncio.sleep(2)  # the last runs' follow-ups
        t_stop = time.time()
        cpu_conv = {k: cpu_seconds(p) - cpu1[k] for k, p in pids.items()}
        peak, op_cpu = rss_peak_mb(operator.pid), cpu_seconds(operator.pid)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    finally:
        stop_process(operator)
    jobs = (await kube.call("GET", JOBS))["items"]
    await kube.close()

    time.sleep(3)  # the audit log is written in batches (at most 1 s apart)
    events = list({e["auditID"]: e for e in cluster.plane.audit_events()}.values())  # one per request
    calls = Counter(
        what(e)
        for e in events
        if e["user"]["username"] == OPERATOR and t_start <= ts(e["requestReceivedTimestamp"]) < t_stop
    )
    s3 = Counter(S3_REQUEST.findall((cluster.root / "s3.log").read_text()))
    s3["PUT"] -= 1  # the bucket
    hand, reaction, work = audit_handoffs(events, "run")

    def per_run(counts: Counter[str]) -> str:
        top = ", ".join(f"{k} {n / runs:.1f}" for k, n in counts.most_common() if n / runs >= 0.05)
        return f"{counts.total() / runs:.1f} = {top}"

    lines = [
        f"runs: {runs} x 5 stages, done in {elapsed:.1f} s = {runs / elapsed * 60:.0f} runs/min "
        f"(target: 100 in < 60 s)",
        f"bare controller, same {runs * 5} Jobs: {bare:.1f} s; conveyor / bare = {elapsed / bare:.2f}x",
        f"stage hand-off (audit log: completing status write -> create request): {stats(hand)} over "
        f"{len(hand)} (target: median < 0.5 s, p95 < 1.5 s); bare controller "
        + stats(audit_handoffs(events, "bare")[0]),
        f"stage hand-off (completionTime -> creationTimestamp, 1 s resolution): "
        f"{stats(object_handoffs(jobs, 'run'))}; bare controller {stats(object_handoffs(jobs, 'bare'))}",
        f"operator peak memory (VmHWM): {peak:.0f} MB (target < 150 MB); operator CPU {op_cpu:.1f} s "
        f"(of it {cpu_conv['operator']:.1f} s during the runs)",
        f"operator API calls per run: {per_run(calls)}",
        f"operator S3 requests per run: {per_run(s3)}",
        "where the time goes: operator hand-off = completing write -> GET of the run by the reconcile "
        f"that creates the Job {stats(reaction)} + that GET -> create {stats(work)}",
    ]
    for label, cpu, wall in (("conveyor", cpu_conv, elapsed + 2), ("bare", cpu_bare, bare)):
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
        lines.append(f"  CPU s in the {label} phase ({wall:.1f} s wall x 2 cores = {2 * wall:.0f}): {parts}")
    pattern = re.compile(r"conveyor_(reconcile_duration|stage_handoff)_seconds_(sum|count)")
    lines += [f"  operator metric: {line}" for line in metrics.splitlines() if pattern.match(line)]
    print("\n".join(lines))


def main(runs: int) -> None:
    root = REPO / ".test-cluster" / f"bench-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(root / "s3.log").open("wb"),  # a line per request
    )
    cluster = Cluster(root, f"http://127.0.0.1:{port}", instant=True)
    cluster.plane.audit_everything = True  # every request's metadata: calls are counted from it
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        urllib.request.urlopen(urllib.request.Request(f"{cluster.s3_endpoint}/bench", method="PUT"))
        cluster.up()
        asyncio.run(bench(cluster, runs, moto.pid))
    finally:
        cluster.down()
        moto.terminate()
        moto.wait(10)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    main(parser.parse_args().runs)
