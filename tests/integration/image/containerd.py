"""A private containerd (its own config, root, state and socket) that runs the image with runc, as
a kubelet would: host network, read-only root filesystem, a tmpfs on /tmp (the emptyDir the
operator's pods mount there), the image's own non-root USER."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

NAMESPACE = "conveyor-test"
# On the CI VMs containerd fails to start containers unless it may not lower oom_score_adj.
CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
"""


class Containerd:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # a unix socket path must stay under 108 bytes: the state folder lives in /run
        self.state = Path(f"/run/conveyor-image-test-{os.getpid()}")
        self.socket = self.state / "containerd.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.workdir / "config.toml"
        root = self.workdir / "root"
        config.write_text(CONFIG.format(root=root, state=self.state, socket=self.socket))
        log = (self.workdir / "containerd.log").open("wb")
        self.proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False).returncode != 0:
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, "containerd did not answer:\n" + self.log()
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["umount", "-R", str(self.state)], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.state)], capture_output=True)

    def log(self) -> str:
        return (self.workdir / "containerd.log").read_text(errors="replace")[-4000:]

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def import_image(self, archive: Path) -> str:
        """Import a docker-archive; returns the image's name as containerd lists it."""
        out = self.ctr("image", "import", "--no-unpack", str(archive)).stdout
        names = [line.split()[1] for line in out.splitlines() if line.startswith("unpacking ")]
        listed = self.ctr("image", "list", "--quiet").stdout.split()
        names = names or listed
        assert len(names) == 1, f"expected one image in {archive}, got {names}: {out}"
        return names[0]

    def run_args(self, image: str, name: str, env: dict[str, str], mounts: Sequence[str]) -> list[str]:
        args = [
            "--net-host",
            "--read-only",
            "--mount",
            "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev",
        ]
        for mount in mounts:
            args += ["--mount", mount]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        return [*args, image, name]

    def run(
        self,
        image: str,
        name: str,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        mounts: Sequence[str] = (),
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` in a new container to its end; the container is removed."""
        args = self.run_args(image, name, env or {}, mounts)
        return self.ctr("run", "--rm", *args, *command, check=False, timeout=timeout)

    @contextlib.contextmanager
    def running(
        self, image: str, name: str, command: Sequence[str], env: dict[str, str] | None = None
    ) -> Iterator[Path]:
        """A detached container running `command`; yields the file its output goes to."""
        out = self.workdir / f"{name}.log"
        args = self.run_args(image, name, env or {}, ())
        self.ctr("run", "--detach", "--log-uri", f"file://{out}", *args, *command)
        try:
            yield out
        finally:
            self.ctr("task", "kill", "--signal", "SIGKILL", name, check=False)
            deadline = time.monotonic() + 30
            while self.ctr("task", "delete", name, check=False).returncode != 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.ctr("container", "delete", name, check=False)
