"""`make dev-cluster` / `make dev-cluster-down`: the test cluster, for people.

python -m tests.cluster up     # control plane, process kubelet, S3 (moto), helm install,
                               # and the operator running as the chart's ServiceAccount
python -m tests.cluster down   # stops everything it started (by PID) and removes its state
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.cluster.cluster import CREDENTIALS_SECRET, Cluster, tools
from tests.cluster.controlplane import REPO, free_port

STATE = REPO / ".dev-cluster"


def _wait_port(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(STATE / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child)
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
    )
    (STATE / f"{name}.pid").write_text(str(proc.pid))
    return proc


def up() -> int:
    if any(STATE.glob("*.pid")) or any(STATE.glob("*/*.pid")):
        print(
            f"a dev cluster is already up (state in {STATE}); `make dev-cluster-down` first", file=sys.stderr
        )
        return 1
    STATE.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG", "CONVEYOR_"))}
    print("starting S3 (moto) ...", flush=True)
    s3_port = free_port()
    _spawn("s3", [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], env)
    _wait_port(s3_port)
    endpoint = f"http://127.0.0.1:{s3_port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/conveyor", method="PUT"))
    print(
        "starting etcd, kube-apiserver, kube-controller-manager, the process kubelet; helm install ...",
        flush=True,
    )
    cluster = Cluster(STATE, endpoint).up()
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        CREDENTIALS_SECRET,
        "-n",
        "default",
        "--from-literal=AWS_ACCESS_KEY_ID=testing",
        "--from-literal=AWS_SECRET_ACCESS_KEY=testing",
    )
    cluster.kubectl("label", "secret", CREDENTIALS_SECRET, "-n", "default", "conveyor.dev/credentials=true")
    op_env = {
        **env,
        "KUBECONFIG": str(cluster.operator_kubeconfig),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CONVEYOR_STORE": "s3://conveyor/conveyor",
        "CONVEYOR_S3_ENDPOINT": endpoint,
        "CONVEYOR_CREDENTIALS_SECRET": CREDENTIALS_SECRET,
        "CONVEYOR_READ_ONLY_CREDENTIALS_SECRET": CREDENTIALS_SECRET,  # moto checks no credentials
        "CONVEYOR_IMAGE": "conveyor:dev",
        "CONVEYOR_METRICS_PORT": str(free_port()),
        "CONVEYOR_HEALTH_PORT": str(free_port()),
    }
    _spawn("operator", [str(bin_dir / "conveyor"), "operator", "--all-namespaces"], op_env)
    print(f"""
The cluster is up ({cluster.startup_seconds:.0f} s). The operator runs as the chart's ServiceAccount
(log: {STATE / "operator.log"}); pods run as local processes (log: {STATE / "kubelet.log"}).

    export KUBECONFIG={cluster.admin_kubeconfig}
    export PATH={tools()}:$PATH   # kubectl and helm
    kubectl apply -f examples/breast-cancer/pipeline.yaml -f examples/breast-cancer/run.yaml
    kubectl get cvp,cvr
    kubectl wait --for=condition=Succeeded cvr/breast-cancer-1 --timeout=300s

Stop it with `make dev-cluster-down`.""")
    return 0


def down() -> int:
    pids = sorted(STATE.glob("*.pid")) + sorted(STATE.glob("*/*.pid"))
    for path in pids:
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(path.read_text()), signal.SIGTERM)
    time.sleep(2)
    for path in pids:
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(path.read_text()), signal.SIGKILL)
    shutil.rmtree(STATE, ignore_errors=True)
    print(f"stopped {len(pids)} processes; removed {STATE}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args()
    return up() if args.action == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
