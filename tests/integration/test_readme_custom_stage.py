"""The custom-stage contract as README.md states it: its own snippet, run as a stage after a
built-in ingest, commits an output and a metric; a second run reuses it; editing the script
makes it run again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

README = Path(__file__).parents[2] / "README.md"


def readme_stage() -> str:
    """The README's ```python block that starts with `# count_rows.py`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (stage,) = [b for b in blocks if b.startswith("# count_rows.py")]
    return stage


def run(pipeline: Path, store: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", str(pipeline), "--store", str(store), "--json"],
        capture_output=True,
        text=True,
        cwd="/",  # the stage runs in the pipeline's folder, wherever `conveyor run` is started
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record: dict[str, Any] = json.loads(proc.stdout)
    return record


def test_the_readme_custom_stage_runs_caches_and_reruns_when_edited(tmp_path: Path) -> None:
    script = tmp_path / "count_rows.py"
    script.write_text(readme_stage())
    pipeline = tmp_path / "pipeline.yaml"
    stages = [
        {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
        {
            "name": "count",
            "image": "count-rows:1",
            "command": [sys.executable, "count_rows.py"],
            "dependsOn": ["ingest"],
        },
    ]
    doc = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "count"}}
    pipeline.write_text(yaml.safe_dump({**doc, "spec": {"stages": stages}}))
    store = tmp_path / "store"

    first = run(pipeline, store)
    count = next(s for s in first["stages"] if s["name"] == "count")
    assert count["phase"] == "Succeeded" and not count["cacheHit"], count
    summary = first["artifacts"]["count"]["summary"]
    assert json.loads(Path(summary["uri"].removeprefix("file://")).read_text()) == {"rows": 150}
    assert count["metrics"] == {"rows": 150.0}

    again = run(pipeline, store)
    assert next(s for s in again["stages"] if s["name"] == "count")["cacheHit"]

    script.write_text(script.read_text() + "# edited\n")
    edited = run(pipeline, store)
    assert not next(s for s in edited["stages"] if s["name"] == "count")["cacheHit"]
