"""`ProcessStarter.start_early`: with `--no-cache` the fork server starts before `conveyor run`
imports and validates anything, so its seconds of imports overlap the CLI's work; never for a
file without a built-in stage, nor when stages are exec'd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows")

# Run in a process of its own: a fork server started here dies with that process, not with pytest.
PROBE = """
import sys
from pathlib import Path
from conveyor.local.processes import ProcessStarter

starter = ProcessStarter(sys.argv[2])
starter.start_early(Path(sys.argv[1]))
print(starter.server is not None and starter.server.process.poll() is None)
print(sorted(m for m in ("pydantic", "asyncio") if m in sys.modules))
"""


def started(tmp_path: Path, text: str, mode: str = "fork") -> tuple[bool, str]:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(text)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(pipeline), mode], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    flag, imported = out.stdout.splitlines()
    return flag == "True", imported


BUILTIN = "spec:\n  stages:\n    - {name: ingest, uses: ingest}\n"
CUSTOM = "spec:\n  stages:\n    - {name: mine, image: x, command: [python, a.py]}\n"


def test_the_fork_server_starts_at_once_for_a_built_in_stage(tmp_path: Path) -> None:
    running, imported = started(tmp_path, BUILTIN)
    assert running
    assert imported == "[]"  # nothing heavy imported before the server starts


def test_no_fork_server_for_custom_stages_only_or_exec(tmp_path: Path) -> None:
    assert started(tmp_path, CUSTOM) == (False, "[]")
    assert started(tmp_path, BUILTIN, mode="exec")[0] is False
