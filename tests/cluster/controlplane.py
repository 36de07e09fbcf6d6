"""etcd, kube-apiserver and kube-controller-manager as local processes, started as envtest
starts them (plus the controllers), stopped by PID.

The binaries come from `tools/build.sh` (built once from the Go module proxy into a cache
folder keyed by version) or from $KUBEBUILDER_ASSETS.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.pki import Pki

REPO = Path(__file__).resolve().parents[2]
ADMIN = ("admin", "system:masters")

# Admission the API server enables by default plus the owner-reference check real clusters
# (OpenShift, many managed ones) run; PodSecurity is on by default and namespaces opt in by label.
ADMISSION = [
    "NamespaceLifecycle",
    "ServiceAccount",
    "OwnerReferencesPermissionEnforcement",
    "PodSecurity",
    "LimitRanger",
    "DefaultStorageClass",
    "ResourceQuota",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
]
CONTROLLERS = [
    "job-controller",
    "ttl-after-finished-controller",
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "endpointslice-controller",
    "pod-garbage-collector-controller",
    "root-ca-certificate-publisher-controller",
]


def binaries() -> Path:
    """The folder with etcd, kube-apiserver and kube-controller-manager (built if missing)."""
    out = subprocess.run(
        ["bash", str(REPO / "tools" / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubeconfig(server: str, ca: Path, user: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "conveyor-test", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "conveyor-test", "context": {"cluster": "conveyor-test", "user": "user"}}],
        "current-context": "conveyor-test",
    }


@dataclass
class ControlPlane:
    """A control plane under `root`; `start()` returns when the API server is ready and the
    controller manager is healthy."""

    root: Path
    bin_dir: Path | None = None
    audit_everything: bool = False  # every request's metadata (benchmarks count calls)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server: str = ""

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    def start(self) -> ControlPlane:
        bins = self.bin_dir or binaries()
        self.root.mkdir(parents=True, exist_ok=True)
        pki = Pki.create(self.root / "pki", {"admin": ADMIN})
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        crt, key = pki.client("admin")
        self._write(
            self.admin_kubeconfig,
            kubeconfig(self.server, pki.ca_crt, {"client-certificate": str(crt), "client-key": str(key)}),
        )
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            [
                str(bins / "etcd"),
                "--name=conveyor-test",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=conveyor-test=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--logger=zap",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.root / 'pki'}",
                f"--tls-cert-file={pki.serving_crt}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_crt}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=false",
                f"--enable-admission-plugins={','.join(ADMISSION)}",
                "--profiling=false",
                "--v=1",
                f"--audit-log-path={self.root / 'audit.log'}",
                f"--audit-policy-file={self._audit_policy()}",
                # every request's metadata (benchmarks) in batches, so as not to slow each request
                *(
                    ["--audit-log-mode=batch", "--audit-log-batch-max-wait=1s"]
                    if self.audit_everything
                    else ["--audit-log-mode=blocking"]
                ),
            ],
        )
        self._wait_ready("/readyz", timeout=90)
        self._spawn(
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--authentication-kubeconfig={self.admin_kubeconfig}",
                f"--authorization-kubeconfig={self.admin_kubeconfig}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--concurrent-job-syncs=10",
                "--concurrent-gc-syncs=10",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ],
        )
        self._wait_service_account("default", "default", timeout=60)
        return self

    def _audit_policy(self) -> Path:
        """Log who created or deleted what (the tests count Job creations from it)."""
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                {
                    "level": "Request",
                    "verbs": ["create", "delete"],
                    "resources": [
                        {"group": "batch", "resources": ["jobs"]},
                        {"group": "apps", "resources": ["deployments"]},
                        {"group": "conveyor.dev"},
                    ],
                },
                {"level": "Metadata" if self.audit_everything else "None"},
            ],
        }
        path = self.root / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        return path

    def audit_events(self) -> list[dict[str, Any]]:
        if self.audit_everything:
            time.sleep(1.5)  # written in batches at most 1 s apart
        path = self.root / "audit.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _write(self, path: Path, config: dict[str, Any]) -> None:
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the child)
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
        )
        (self.root / f"{name}.pid").write_text(str(self.procs[name].pid))

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        crt, key = self.pki.client("admin")
        ctx.load_cert_chain(str(crt), str(key))
        return ctx

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """A synchronous admin call (set-up and checks)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Content-Type", content_type)
        req.add_header("Accept", "application/json")
        with urllib.request.urlopen(req, context=self.ssl_context(), timeout=30) as resp:
            text = resp.read()
            return json.loads(text) if text else None

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait_ready(self, path: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        while True:
            self._check_alive()
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.server + path, context=ctx, timeout=5) as resp,
            ):
                if resp.status == 200:
                    return
            if time.monotonic() > end:
                raise TimeoutError(f"the API server was not ready in {timeout}s")
            time.sleep(0.2)

    def _wait_service_account(self, namespace: str, name: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while True:
            self._check_alive()
            with contextlib.suppress(OSError):
                self.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
                return
            if time.monotonic() > end:
                raise TimeoutError(f"no ServiceAccount {namespace}/{name} after {timeout}s")
            time.sleep(0.2)

    def token(self, namespace: str, service_account: str, seconds: int = 86400) -> str:
        """A token for a ServiceAccount from the TokenRequest API (what a projected volume holds)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        out = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token", body
        )
        return str(out["status"]["token"])

    def write_token_kubeconfig(self, path: Path, token: str) -> Path:
        self._write(path, kubeconfig(self.server, self.pki.ca_crt, {"token": token}))
        return path

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            stop_process(self.procs[name])
        self.procs.clear()


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
