"""Install checkov (pinned) into a virtualenv of its own under the cache folder, and print its
path. Its dependencies (boto3, networkx, pydantic versions of its own) stay out of the project's
.venv. Idempotent; used by tests/integration/test_checkov.py.

Usage: python scripts/checkov_tool.py [--cache .cache/checkov]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "3.3.30"
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "checkov"


def ensure(cache: Path = DEFAULT_CACHE) -> Path:
    """The checkov executable, installed on first use (a marker file says the install finished)."""
    venv = cache / VERSION
    checkov, done = venv / "bin" / "checkov", venv / ".installed"
    if done.is_file():
        return checkov
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"checkov=={VERSION}"], check=True)
    done.touch()
    return checkov


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    print(ensure(parser.parse_args().cache))
