"""Every shell command in README.md's code blocks runs as written, so that the README stays true.

The commands run in README order in one bash (a variable one sets is seen by the next, as in a
reader's terminal), from a folder that holds the checkout's `examples/` and `.venv/`, so that the
default store `.conveyor/` starts empty. What the README leaves to the reader is filled in here:
- `RUN`: the newest run in the store the command reads (the local `.conveyor/`, or for an
  `s3://mlops/conveyor/ml/...` URI the run made first by the `s3_run` fixture, as the operator's
  store in namespace `ml` would hold it); `PIPELINE`: breast-cancer;
- S3: a moto server stands for MinIO (`CONVEYOR_S3_ENDPOINT`, `AWS_*`), with the buckets the
  README names (`bucket`, `mlops`);
- port 8000 becomes a free port (other tests, or a reader's server, may hold 8000);
- `curl` fails on an HTTP error (`--fail-with-body`): its exit status says nothing otherwise;
- `conveyor serve` runs in the background until it is ready, and stops when the next one starts
  or at the end.
Commands that need a cluster or take many minutes are skipped only by SKIPPED below, each with
its reason; an entry that no longer matches a README command fails the test."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conveyor.artifacts.layout import list_run_records
from conveyor.artifacts.store import LocalStore, make_s3_client
from tests.conftest import REPO, free_port

README = REPO / "README.md"
CLUSTER = "needs a Kubernetes cluster (kind or `make dev-cluster`); the operator's tests run these paths"
SKIPPED = {  # a command (its first line, without its comment) -> why it does not run here
    "make demo": "installs into .venv and serves until stopped; its steps are the `conveyor run`, "
    "`conveyor serve` and `curl` lines, which run here",
    "make test": "the whole test suite, this test included (18+ minutes)",
    "make kube": "builds Kubernetes from source (about 17 minutes the first time)",
    "make dev-cluster": "starts a control plane and the operator (minutes, long-running)",
    "make dev-cluster-down": "stops what `make dev-cluster` started",
    "make manifests": "rewrites the checkout's generated files; `make lint` checks they are current",
    "make bench": "runs the benchmarks (many minutes)",
    "hack/kind-up.sh": "needs Docker and kind (no Docker engine here)",
    "kind create cluster --config kind-config.yaml": "needs Docker and kind",
    "docker build -t conveyor:dev . && kind load docker-image conveyor:dev --name conveyor": "needs Docker",
    "helm upgrade --install conveyor charts/conveyor -n conveyor --create-namespace \\": CLUSTER,
    "kubectl -n conveyor apply -f examples/breast-cancer/pipeline.yaml": CLUSTER,
    "kubectl -n conveyor create -f examples/breast-cancer/run.yaml": CLUSTER,
    "kubectl -n conveyor get cvr -w": CLUSTER,
    "kubectl -n conveyor apply -f examples/breast-cancer/deployment.yaml": CLUSTER,
    "kubectl apply -f crds/": CLUSTER,
    "CONVEYOR_STORE=s3://mlops/conveyor CONVEYOR_S3_ENDPOINT=http://minio:9000 \\": CLUSTER
    + " (the operator watches one until stopped)",
    "kubectl -n ml apply -f examples/breast-cancer/pipeline.yaml": CLUSTER,
    "kubectl -n ml create -f examples/breast-cancer/run.yaml": CLUSTER,
    "kubectl -n ml get cvr": CLUSTER,
    "export KUBECONFIG=$PWD/.dev-cluster/control-plane/admin.kubeconfig PATH=$PWD/.cache/k8s-tools:$PATH": (
        "points at `make dev-cluster`'s files"
    ),
    "kubectl apply -f examples/breast-cancer/pipeline.yaml -f examples/breast-cancer/run.yaml": CLUSTER,
    "kubectl get cvp,cvr": CLUSTER,
    "kubectl wait --for=condition=Succeeded cvr/breast-cancer-1 --timeout=300s": CLUSTER,
}
LONG_RUNNING = re.compile(r"^(\.venv/bin/)?conveyor serve\b")
SERVE_PORT = "8000"


def commands(text: str) -> list[str]:
    """The commands of the ```sh blocks: a command ends where bash finds it complete (a quote
    or `\\` may carry it over several lines); blank and comment lines between them are left out."""
    found = []
    for block in re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", text, flags=re.S | re.M):
        pending: list[str] = []
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending.append(line)
            command = "\n".join(pending)
            if command.endswith("\\"):
                continue
            if subprocess.run(["bash", "-n", "-c", command], capture_output=True).returncode == 0:
                found.append(command)
                pending = []
        assert not pending, f"README.md: a shell block ends inside a command: {pending}"
    return found


def key(command: str) -> str:
    return re.sub(r"\s+#\s.*$", "", command.splitlines()[0]).strip()


@dataclass
class Shell:
    """One bash for the whole README; each command's output goes to files under `logs`."""

    cwd: Path
    env: dict[str, str]
    logs: Path
    proc: subprocess.Popen[str] = field(init=False)
    background: int | None = None

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
            env=self.env,
        )
        self._send("set -o pipefail")

    def _send(self, script: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(script + "\n")
        self.proc.stdin.flush()

    def _answer(self, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no answer in {timeout:.0f} s")
        return self.proc.stdout.readline().split()

    def run(self, n: int, command: str, timeout: float = 600) -> int:
        redirect = f">{self.logs}/{n}.out 2>{self.logs}/{n}.err </dev/null"
        self._send(f"{{ {command}\n}} {redirect}; echo __rc__ $?")
        return int(self._answer(timeout)[1])

    def start(self, n: int, command: str) -> int:
        """Start a long-running command in the background (after stopping the previous one)."""
        self.stop_background()
        self._send(
            f"{{ {command}\n}} >{self.logs}/{n}.out 2>{self.logs}/{n}.err </dev/null &\necho __pid__ $!"
        )
        self.background = int(self._answer(30)[1])
        return self.background

    def stop_background(self) -> None:
        if self.background is not None:
            kill_tree(self.background)
            self.background = None

    def close(self) -> None:
        self.stop_background()
        try:
            self._send("exit 0")
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):  # a command still holds it: end it all
            kill_tree(self.proc.pid)


def descendants(pid: int) -> list[int]:
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    found = [int(p) for p in children.stdout.split()]
    return found + [d for child in found for d in descendants(child)]


def kill_tree(pid: int) -> None:
    """The background command and what it started (its own processes only, by PID)."""
    pids = [pid, *descendants(pid)]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for p in pids:
        if alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_ready(pid: int, port: int, log: Path) -> str | None:
    """None once the server answers ready; else why not."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not alive(pid):
            return f"exited before it was ready:\n{log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return None
        except OSError:
            pass
        time.sleep(0.2)
    return f"not ready after 120 s:\n{log.read_text()[-2000:]}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder like the checkout for what the README names (examples, the venv), without its
    `.conveyor/` store or generated `crds/`."""
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "examples").symlink_to(REPO / "examples")
    (root / ".venv").symlink_to(Path(sys.prefix))
    return root


@pytest.fixture
def environment(s3_env: str) -> Iterator[dict[str, str]]:
    """What the commands see: the venv first on PATH (as activated), S3 in moto; no settings of
    the machine's own (`CONVEYOR_*`, `AWS_*`, `KUBECONFIG`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "AWS_", "KUBE"))}
    s3_endpoint = s3_env
    env.update(
        PATH=f"{Path(sys.prefix) / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        CONVEYOR_S3_ENDPOINT=s3_endpoint,
    )
    client = make_s3_client(s3_endpoint)
    for bucket in ("bucket", "mlops"):
        client.create_bucket(Bucket=bucket)
    yield env
    for bucket in ("bucket", "mlops"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_run(workdir: Path, environment: dict[str, str]) -> str:
    """A run in the operator's store of the README (s3://mlops/conveyor, namespace ml)."""
    proc = subprocess.run(
        [
            *(".venv/bin/conveyor", "run", "examples/breast-cancer/pipeline.yaml"),
            *("--store", "s3://mlops/conveyor"),
            *("-n", "ml", "-o", "name"),
        ],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def fill(command: str, workdir: Path, s3_run: str, port: int) -> str:
    """The README's placeholders, filled in (see the module's docstring)."""
    if "RUN" in command:
        if "s3://mlops/conveyor/ml/" in command:
            run = s3_run
        else:
            records = list_run_records(LocalStore(workdir / ".conveyor"))
            run = records[-1].run if records else "no-run-yet"
        command = re.sub(r"\bRUN\b", run, command)
    command = re.sub(r"\bPIPELINE\b", "breast-cancer", command)
    command = command.replace(f"localhost:{SERVE_PORT}", f"localhost:{port}")
    command = command.replace(f"--port {SERVE_PORT}", f"--port {port}")
    if LONG_RUNNING.match(command) and "--port" not in command:
        command = command.replace("conveyor serve ", f"conveyor serve --port {port} ", 1)
    return re.sub(r"^curl -s ", "curl -sS --fail-with-body ", command)


def test_skipped_commands_are_in_the_readme() -> None:
    """A skip that no longer matches a README command would let a new command go untested."""
    keys = {key(c) for c in commands(README.read_text())}
    assert set(SKIPPED) - keys == set()


def test_the_command_parser_follows_quotes_and_continuations() -> None:
    text = "```sh\nA=$(echo 'x\ny')  # two lines\n\n# a comment\nls \\\n  -l\n```\n```yaml\na: b\n```\n"
    assert commands(text) == ["A=$(echo 'x\ny')  # two lines", "ls \\\n  -l"]


@pytest.mark.slow
def test_every_readme_command_runs(
    workdir: Path, environment: dict[str, str], s3_run: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    shell = Shell(workdir, environment, logs)
    failures, ran = [], []
    try:
        for n, command in enumerate(commands(README.read_text())):
            if key(command) in SKIPPED:
                continue
            filled = fill(command, workdir, s3_run, port)
            ran.append(filled)
            if LONG_RUNNING.match(filled):
                why = wait_ready(shell.start(n, filled), port, logs / f"{n}.err")
                if why is not None:
                    failures.append(f"$ {filled}\n{why}")
                continue
            code = shell.run(n, filled)
            if code != 0:
                out = (logs / f"{n}.out").read_text()[-1500:]
                err = (logs / f"{n}.err").read_text()[-1500:]
                failures.append(f"$ {filled}\nexit {code}\n{out}{err}")
    finally:
        shell.close()
    assert not failures, "\n\n".join(failures)
    assert len(ran) >= 15, ran  # the local, render, serve and curl lines
