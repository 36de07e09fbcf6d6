"""The image built by `make image` (scripts/image-build.sh) and imported into a private containerd.
Skipped off Linux; on Linux without the tools (or root) it is skipped, except in CI (CI=true)
where that is a failure: `make test` installs them (scripts/install-image-tools.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.image.containerd import Containerd

TOOLS = ("debootstrap", "buildah", "containerd", "ctr", "runc")

if not sys.platform.startswith("linux"):
    pytest.skip("the image is built and run with Linux tools", allow_module_level=True)


def missing_tools() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}: run scripts/install-image-tools.sh"
    if os.geteuid() != 0:
        return "building (debootstrap, buildah) and running the image (containerd) need root"
    return None


@pytest.fixture(scope="session")
def image_archive() -> Path:
    """The image as a docker-archive, built by `make image`'s script (cached in ~/.cache)."""
    why = missing_tools()
    if why is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must build and run the image: {why}")
        pytest.skip(why)
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "image-build.sh")],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, f"image build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    print(f"\nimage build: {time.monotonic() - started:.0f}s; {proc.stdout.splitlines()[-1]}")
    cache = Path(os.environ.get("CONVEYOR_IMAGE_CACHE", Path.home() / ".cache" / "conveyor" / "image"))
    return cache / "conveyor.tar"


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    daemon = Containerd(tmp_path_factory.mktemp("containerd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def image(image_archive: Path, containerd: Containerd) -> str:
    """The image's name in the private containerd."""
    return containerd.import_image(image_archive)
