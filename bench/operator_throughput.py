"""Operator throughput: 100 PipelineRuns of a 5-stage pipeline against the API emulator.

The operator runs as a real separate process (`conveyor operator`, its own peak RSS read from
/proc); the test kubelet marks each Job complete the moment it appears. Reported: runs per
minute, the stage hand-off (from a stage's last dependency's Job completing to its own Job's
creation, both stamped by the emulator's clock), median and p95, and the operator's peak
memory. Baseline, measured in the same run: a bare controller in this process that does only
the API calls (watch Jobs, create the next one) for the same 500 Jobs, with no planning,
store or status writes.

Targets: median hand-off < 1 s, 100 runs in < 2 minutes, operator memory < 200 MB.
Usage: python bench/operator_throughput.py [--runs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import kmock  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.integration.kube.cluster import ApiServer, write_kubeconfig  # noqa: E402
from tests.integration.kube.kubelet import Kubelet  # noqa: E402

STAGES = ["a", "b", "c", "d", "e"]  # a -> b -> c -> d -> e
DEPS = {"b": "a", "c": "b", "d": "c", "e": "d"}


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def handoffs(api: ApiServer) -> list[float]:
    jobs = {j["metadata"]["name"]: j for j in api.objects_of("batch/v1/jobs")}
    out = []
    for name, job in jobs.items():
        run, _, stage = name.rpartition("-")
        dep = DEPS.get(stage)
        if dep and f"{run}-{dep}" in jobs:
            done = jobs[f"{run}-{dep}"].get("status", {}).get("completionTime")
            if done:
                out.append(ts(job["metadata"]["creationTimestamp"]) - ts(done))
    return out


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bare_controller(api: ApiServer, runs: int) -> float:
    """The floor: create each run's Jobs one after another as the previous completes."""
    start = time.perf_counter()

    async def chain(i: int) -> None:
        for stage in STAGES:
            name = f"bare{i}-{stage}"
            body = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "c", "image": "x"}], "restartPolicy": "Never"}
                    }
                },
            }
            resp = await api.post("/apis/batch/v1/namespaces/default/jobs", json=body)
            resp.release()
            while (
                not (api.get_object("batch/v1/jobs", "default", name) or {})
                .get("status", {})
                .get("succeeded")
            ):
                await asyncio.sleep(0.01)

    await asyncio.gather(*(chain(i) for i in range(runs)))
    return time.perf_counter() - start


async def main(runs: int) -> None:
    # S3 in its own process, as it would be: the emulator and kubelet keep this one busy.
    s3_port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(2)
    endpoint = f"http://127.0.0.1:{s3_port}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CONVEYOR_S3_ENDPOINT": endpoint,
    }
    os.environ.update(
        {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    )
    from conveyor.artifacts.store import make_s3_client

    make_s3_client(endpoint).create_bucket(Bucket="bench")
    async with ApiServer() as api, kmock.Server(api, host="127.0.0.1"):
        api.declare()
        # the floor first, with the same kubelet
        async with Kubelet(api, mode="instant", poll=0.01):
            bare = await bare_controller(api, runs)
        for job in list(api.objects):
            if "jobs" in str(job[0]):
                del api.objects[job]
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = write_kubeconfig(Path(tmp) / "kubeconfig", str(api.url).rstrip("/"))
            op_env = {
                **env,
                "KUBECONFIG": str(kubeconfig),
                "CONVEYOR_STORE": "s3://bench/conveyor",
                "CONVEYOR_METRICS_PORT": str(free_port()),
                "CONVEYOR_HEALTH_PORT": str(free_port()),
                "CONVEYOR_RESYNC_SECONDS": "5",
            }
            operator = subprocess.Popen(
                [
                    sys.executable,
                    *os.environ.get("BENCH_PROFILE", "").split(),
                    "-m",
                    "conveyor",
                    "operator",
                    "-n",
                    "default",
                ],
                env=op_env,
                stdout=subprocess.DEVNULL,
                stderr=open(os.environ.get("BENCH_LOG", str(Path(tmp) / "log")), "w"),  # noqa: SIM115
            )
            try:
                await asyncio.sleep(3)  # let it start and list (empty) resources
                pipeline = {
                    "apiVersion": "conveyor.dev/v1alpha1",
                    "kind": "Pipeline",
                    "metadata": {"name": "five", "namespace": "default"},
                    "spec": {
                        "stages": [
                            {
                                "name": s,
                                "image": "busybox",
                                "command": ["true"],
                                "cache": False,
                                **({"dependsOn": [DEPS[s]]} if s in DEPS else {}),
                            }
                            for s in STAGES
                        ]
                    },
                }
                resp = await api.post(
                    "/apis/conveyor.dev/v1alpha1/namespaces/default/pipelines", json=pipeline
                )
                resp.release()
                async with Kubelet(api, mode="instant", poll=0.01):
                    start = time.perf_counter()
                    for i in range(runs):
                        run = {
                            "apiVersion": "conveyor.dev/v1alpha1",
                            "kind": "PipelineRun",
                            "metadata": {"name": f"run{i}", "namespace": "default"},
                            "spec": {"pipelineRef": {"name": "five"}},
                        }
                        resp = await api.post(
                            "/apis/conveyor.dev/v1alpha1/namespaces/default/pipelineruns", json=run
                        )
                        resp.release()

                    def done() -> int:
                        return sum(
                            (r.get("status") or {}).get("phase") == "Succeeded"
                            for r in api.objects_of("conveyor.dev/v1alpha1/pipelineruns")
                        )

                    while done() < runs:
                        if operator.poll() is not None:
                            raise SystemExit(
                                f"the operator exited: {(Path(tmp) / 'log').read_text()[-2000:]}"
                            )
                        if time.perf_counter() - start > 600:
                            raise SystemExit(f"only {done()} of {runs} runs finished in 600 s")
                        await asyncio.sleep(0.1)
                    elapsed = time.perf_counter() - start
                peak = rss_peak_mb(operator.pid)
                fields = Path(f"/proc/{operator.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                import urllib.request

                metrics_text = (
                    urllib.request.urlopen(f"http://127.0.0.1:{op_env['CONVEYOR_METRICS_PORT']}/metrics")
                    .read()
                    .decode()
                )
            finally:
                operator.terminate()
                operator.wait(30)
        hand = sorted(handoffs(api))
        per_run = {f"{verb} {res}": n / runs for (verb, res), n in api.calls.items() if n >= runs}
    moto.terminate()
    p95 = hand[int(0.95 * (len(hand) - 1))]
    print(
        f"runs: {runs} x 5 stages, done in {elapsed:.1f} s = {runs / elapsed * 60:.0f} runs/min "
        f"(target: {runs} in < 120 s)"
    )
    print(f"bare controller, same {runs * 5} Jobs: {bare:.1f} s; conveyor / bare = {elapsed / bare:.2f}x")
    print(
        f"stage hand-off: median {statistics.median(hand) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
        f"over {len(hand)} hand-offs (target: median < 1 s)"
    )
    print(
        f"operator peak memory (VmHWM): {peak:.0f} MB (target < 200 MB); operator CPU {cpu:.1f} s "
        f"(incl. ~3 s start-up), this process (emulator, kubelet) CPU {time.process_time():.1f} s"
    )
    ranked = sorted(per_run.items(), key=lambda kv: -kv[1])
    print("operator API calls per run: " + ", ".join(f"{k} {v:.1f}" for k, v in ranked))
    for line in metrics_text.splitlines():
        if line.startswith(
            (
                "conveyor_reconcile_duration_seconds_sum",
                "conveyor_reconcile_duration_seconds_count",
                "conveyor_stage_handoff_seconds_sum",
                "conveyor_stage_handoff_seconds_count",
            )
        ):
            print("  operator metric:", line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    asyncio.run(main(parser.parse_args().runs))
