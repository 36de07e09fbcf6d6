"""The whole test cluster: the control plane, the process kubelet, and Conveyor installed with
the real `helm install` of `charts/conveyor` (CRDs, ServiceAccount, RBAC). The operator itself
is not run by the chart here (`operator.replicas=0`): it runs on this machine as the chart's
ServiceAccount, with a token from the TokenRequest API, so the chart's RBAC authorises every call.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.controlplane import REPO, ControlPlane, stop_process

sys.path.insert(0, str(REPO / "scripts"))
from k8s_tools import ensure

CHART = REPO / "charts" / "conveyor"
RELEASE = "conveyor"
RELEASE_NAMESPACE = "conveyor"
OPERATOR_SA = "conveyor"  # the chart's ServiceAccount for release "conveyor"
CREDENTIALS_SECRET = "s3-credentials"


def tools() -> Path:
    return ensure()


@dataclass
class Cluster:
    root: Path
    s3_endpoint: str
    instant: bool = False
    plane: ControlPlane = field(init=False)
    kubelet: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.plane = ControlPlane(self.root / "control-plane")

    @property
    def admin_kubeconfig(self) -> Path:
        return self.plane.admin_kubeconfig

    @property
    def operator_kubeconfig(self) -> Path:
        return self.root / "operator.kubeconfig"

    def up(self) -> Cluster:
        started = time.monotonic()
        self.plane.start()
        self.start_kubelet()
        self.install()
        self.startup_seconds = time.monotonic() - started
        return self

    def install(self) -> None:
        """`helm upgrade --install` of the chart, then a fresh token of its ServiceAccount in
        the operator's kubeconfig."""
        self.helm(
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            *self.chart_values(),
            "--wait",
            "--timeout",
            "120s",
        )
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/pipelines.conveyor.dev",
            "crd/pipelineruns.conveyor.dev",
            "crd/modeldeployments.conveyor.dev",
        )
        token = self.plane.token(RELEASE_NAMESPACE, OPERATOR_SA)
        self.plane.write_token_kubeconfig(self.operator_kubeconfig, token)

    def chart_values(self) -> list[str]:
        return [
            "--set",
            "operator.replicas=0",
            "--set",
            f"operator.credentialsSecret={CREDENTIALS_SECRET}",
            "--set",
            f"operator.s3Endpoint={self.s3_endpoint}",
        ]

    def start_kubelet(self) -> None:
        log = open(self.root / "kubelet.log", "ab")  # noqa: SIM115 (kept open for the child)
        argv = [
            sys.executable,
            "-m",
            "tests.cluster.kubelet",
            "--kubeconfig",
            str(self.admin_kubeconfig),
            "--root",
            str(self.root / "pods"),
        ]
        if self.instant:
            argv.append("--instant")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG", "CONVEYOR_"))}
        env["PYTHONPATH"] = str(REPO)
        self.kubelet = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True
        )
        (self.root / "kubelet.pid").write_text(str(self.kubelet.pid))

    def stop_kubelet(self) -> None:
        if self.kubelet is not None:
            stop_process(self.kubelet)
            self.kubelet = None

    def down(self) -> None:
        self.stop_kubelet()
        self.plane.stop()

    def run_tool(
        self,
        tool: str,
        *args: str,
        check: bool = True,
        kubeconfig: Path | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.admin_kubeconfig),
            "HELM_CACHE_HOME": str(self.root / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.root / "helm-config"),
            "HELM_DATA_HOME": str(self.root / "helm-data"),
        }
        proc = subprocess.run(
            [str(tools() / tool), *args], capture_output=True, text=True, env=env, input=input, timeout=300
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run_tool("helm", *args, check=check)

    def kubectl(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run_tool("kubectl", *args, check=check, **kw)
