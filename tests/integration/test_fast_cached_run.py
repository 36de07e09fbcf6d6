"""`conveyor run` answered from a run memo (`local.fastrun`) says and records what the full path
says and records for the same fully cached run; and whatever the answer depended on, when it
changes, sends the run the full way (which then answers right).

Each run is a subprocess under `-X importtime`: whether it imported pydantic tells which path
answered (the fast path imports neither pydantic nor Rich nor asyncio), and the import lines
are taken out of its stderr before that is compared.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

HEAVY = ("pydantic", "rich", "asyncio", "yaml", "pandas", "sklearn", "numpy", "boto3")
IMPORT = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$")


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str  # without the import lines
    imported: set[str]

    @property
    def fast(self) -> bool:
        return "pydantic" not in self.imported


def conveyor(*args: str, store: Path, home: Path, env: dict[str, str] | None = None) -> Ran:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "conveyor", "run", *args, "--store", str(store)],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home), **(env or {})},
        timeout=600,
        check=False,
    )
    imported, lines = set(), []
    for line in proc.stderr.splitlines(keepends=True):
        found = IMPORT.match(line.rstrip("\n"))
        if found:
            imported.add(found.group(1).split(".")[0])
        else:
            lines.append(line)
    return Ran(proc.returncode, proc.stdout, "".join(lines), imported)


def _records(store: Path) -> list[dict[str, object]]:
    found = [json.loads(p.read_text()) for p in store.glob("*/*/*/run.json")]
    return sorted(found, key=lambda r: str(r["startTime"]))


def _newest(store: Path) -> dict[str, object]:
    return _records(store)[-1]


def _without_name_and_times(record: dict[str, object]) -> dict[str, object]:
    drop = ("run", "startTime", "completionTime")
    stages = [{k: v for k, v in s.items() if k not in ("startTime", "finishTime")} for s in record["stages"]]  # type: ignore[attr-defined]
    return {**{k: v for k, v in record.items() if k not in drop}, "stages": stages}


def _forget(store: Path) -> None:
    """Delete the store's run memos: the next run takes the full path."""
    for memo in (store / "cache" / "runs").glob("*.json"):
        memo.unlink()


def _stage_files(store: Path, record: dict[str, object]) -> dict[str, bytes]:
    run = store / str(record["namespace"]) / str(record["pipeline"]) / str(record["run"])
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob("*/*.json"))}


PIPELINES = [
    REPO / "bench" / "five-stage.yaml",
    REPO / "examples" / "breast-cancer" / "pipeline.yaml",
    REPO / "examples" / "penguins" / "pipeline.yaml",
]


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.parent.name)
def test_the_fast_path_answers_as_the_full_path(pipeline: Path, tmp_path: Path) -> None:
    store, home = tmp_path / "store", tmp_path
    first = conveyor(str(pipeline), store=store, home=home)
    assert first.code == 0, first.stderr
    for output in ([], ["-o", "json"], ["-o", "yaml"], ["-o", "name"]):
        _forget(store)
        full = conveyor(str(pipeline), *output, store=store, home=home)
        full_record = _newest(store)
        fast = conveyor(str(pipeline), *output, store=store, home=home)
        fast_record = _newest(store)
        assert not full.fast and fast.fast, (output, fast.stderr)
        assert fast.code == full.code == 0
        assert fast_record["run"] != full_record["run"]
        assert _without_name_and_times(fast_record) == _without_name_and_times(full_record)
        assert _stage_files(store, fast_record) == _stage_files(store, full_record)
        old, new = str(full_record["run"]), str(fast_record["run"])
        assert fast.stderr == full.stderr.replace(old, new)
        if output[1:] in (["json"], ["yaml"]):  # the record, in the same order, its own name and times
            load = json.loads if output[1] == "json" else yaml.safe_load  # YAML 1.1 reads 1e-06 as text
            printed, expected = load(fast.stdout), load(full.stdout)
            assert list(printed) == list(expected) and printed["run"] == new
            assert _without_name_and_times(printed) == _without_name_and_times(expected)
            assert printed == fast_record
        else:
            assert fast.stdout == full.stdout.replace(old, new)
        assert all(s["cacheHit"] for s in fast_record["stages"])  # type: ignore[attr-defined]


def test_the_fast_path_imports_nothing_heavy(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    ran = conveyor(str(warm / "p.yaml"), store=store, home=tmp_path)
    assert ran.fast and ran.code == 0
    assert not ran.imported & set(HEAVY), ran.imported & set(HEAVY)


# A small pipeline of its own, with a local source and a parameter, run twice once per module
# (the second run, fully cached, writes the memo); each test takes a copy of its store.
PIPELINE = """\
apiVersion: conveyor.dev/v1alpha1
kind: Pipeline
metadata: {name: memo}
spec:
  params: [{name: min, default: "0.5"}]
  stages:
    - {name: ingest, uses: ingest, with: {source: data.csv, target: y}}
    - {name: validate, uses: validate, dependsOn: [ingest], with: {expectations: {minRows: 10}}}
    - {name: transform, uses: transform, dependsOn: [validate], with: {testSize: 0.25, randomState: 1}}
    - name: train
      uses: train
      dependsOn: [transform]
      with: {estimator: sklearn.linear_model.LogisticRegression}
    - name: evaluate
      uses: evaluate
      dependsOn: [train]
      with: {gate: {metric: accuracy, min: $(params.min)}}
"""


def _data() -> str:
    rows = [f"{i % 7},{(i * 3) % 11},{int((i % 7) + (i * 3) % 11 > 8)}" for i in range(120)]
    return "x1,x2,y\n" + "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("memo")
    (folder / "p.yaml").write_text(PIPELINE)
    (folder / "data.csv").write_text(_data())
    for _ in range(2):
        ran = conveyor(str(folder / "p.yaml"), store=folder / "store", home=folder)
        assert ran.code == 0 and not ran.fast, ran.stderr
    yield folder


def _copy(warm: Path, tmp_path: Path) -> Path:
    """A copy of the warm store, with a memo for its own place (a full run, then checked fast)."""
    store = tmp_path / "store"
    shutil.copytree(warm / "store", store)
    _forget(store)  # the warm store's memo is for its own place
    assert not conveyor(str(warm / "p.yaml"), store=store, home=tmp_path).fast
    return store


def _cached(record: dict[str, object]) -> dict[str, bool]:
    return {str(s["name"]): bool(s["cacheHit"]) for s in record["stages"]}  # type: ignore[attr-defined]


ALL_CACHED = dict.fromkeys(("ingest", "validate", "transform", "train", "evaluate"), True)


def test_an_edited_pipeline_runs_the_full_path(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    edited = warm / "edited.yaml"  # beside p.yaml (its source is relative), the gate made impossible
    edited.write_text(PIPELINE.replace('default: "0.5"', 'default: "1.01"'))
    ran = conveyor(str(edited), store=store, home=tmp_path)
    assert not ran.fast and ran.code == 3, ran.stderr
    assert _cached(_newest(store)) == {**ALL_CACHED, "evaluate": False}


def test_a_changed_param_runs_the_full_path(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    ran = conveyor(str(warm / "p.yaml"), "-p", "min=1.01", store=store, home=tmp_path)
    assert not ran.fast and ran.code == 3, ran.stderr
    assert _cached(_newest(store)) == {**ALL_CACHED, "evaluate": False}
    # the rejected model's request, fully cached, then answered from its memo: exit 3 each time
    full = conveyor(str(warm / "p.yaml"), "-p", "min=1.01", store=store, home=tmp_path)
    old = str(_newest(store)["run"])
    fast = conveyor(str(warm / "p.yaml"), "-p", "min=1.01", store=store, home=tmp_path)
    assert not full.fast and fast.fast and full.code == fast.code == 3
    assert "the model did not pass" in fast.stderr
    assert fast.stderr == full.stderr.replace(old, str(_newest(store)["run"]))
    allowed = conveyor(str(warm / "p.yaml"), "-p", "min=1.01", "--allow-rejected", store=store, home=tmp_path)
    assert allowed.fast and allowed.code == 0  # the same request: only the exit code depends on it


def test_a_changed_source_runs_the_full_path(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    data = warm / "data.csv"
    before = data.read_text()
    flipped = before.replace(",1\n", ",2\n").replace(",0\n", ",1\n").replace(",2\n", ",0\n")
    assert len(flipped) == len(before) and flipped != before  # same size, other content
    data.write_text(flipped)
    try:
        ran = conveyor(str(warm / "p.yaml"), store=store, home=tmp_path)
    finally:
        data.write_text(before)
    assert not ran.fast and ran.code in (0, 3), ran.stderr
    assert _cached(_newest(store))["ingest"] is False


def _stage_output(store: Path, stage: str, name: str) -> Path:
    record = _newest(store)
    outputs = next(s["outputs"] for s in record["stages"] if s["name"] == stage)  # type: ignore[attr-defined]
    return Path(str(outputs[name]).removeprefix("file://"))


def test_a_deleted_cache_pointer_runs_the_full_path(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    key = next(s["cacheKey"] for s in _newest(store)["stages"] if s["name"] == "train")  # type: ignore[attr-defined]
    (store / "cache" / f"{key}.json").unlink()
    ran = conveyor(str(warm / "p.yaml"), store=store, home=tmp_path)
    assert not ran.fast and ran.code == 0, ran.stderr
    assert _cached(_newest(store))["train"] is False


def test_a_deleted_artifact_runs_the_full_path(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    _stage_output(store, "train", "model").unlink()
    ran = conveyor(str(warm / "p.yaml"), store=store, home=tmp_path)
    assert not ran.fast and ran.code == 0, ran.stderr
    assert _cached(_newest(store))["train"] is False


def test_a_deleted_champion_runs_the_full_path_and_promotes_again(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    (store / "default" / "memo" / "champion.json").unlink()
    ran = conveyor(str(warm / "p.yaml"), store=store, home=tmp_path)
    assert not ran.fast and ran.code == 0, ran.stderr
    record = _newest(store)
    assert _cached(record)["evaluate"] is False and record["model"]["promoted"] is True  # type: ignore[index]
    assert (store / "default" / "memo" / "champion.json").is_file()


@pytest.mark.parametrize("content", [b"{not json", b"{}", b'{"format": 1}', b"[]"])
def test_a_corrupt_memo_runs_the_full_path(warm: Path, tmp_path: Path, content: bytes) -> None:
    store = _copy(warm, tmp_path)
    (memo,) = (store / "cache" / "runs").glob("*.json")
    memo.write_bytes(content)
    ran = conveyor(str(warm / "p.yaml"), store=store, home=tmp_path)
    assert not ran.fast and ran.code == 0, ran.stderr
    assert _cached(_newest(store)) == ALL_CACHED
    assert conveyor(str(warm / "p.yaml"), store=store, home=tmp_path).fast  # written again


def test_a_memo_of_another_version_runs_the_full_path(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    (path,) = (store / "cache" / "runs").glob("*.json")
    memo = json.loads(path.read_text())
    path.write_text(json.dumps({**memo, "conveyor": "0.0.1"}))
    ran = conveyor(str(warm / "p.yaml"), store=store, home=tmp_path)
    assert not ran.fast and ran.code == 0, ran.stderr


def test_edited_code_runs_the_full_path_which_keeps_the_summaries(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)  # its memo holds the summary as printed here
    (path,) = (store / "cache" / "runs").glob("*.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "code": "another checkout"}))
    ran = conveyor(str(warm / "p.yaml"), "-o", "json", store=store, home=tmp_path)
    assert not ran.fast and ran.code == 0, ran.stderr
    assert conveyor(str(warm / "p.yaml"), store=store, home=tmp_path).fast  # the summary kept


def test_another_terminal_width_runs_the_full_path_then_is_remembered(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    narrow = {"COLUMNS": "50"}
    full = conveyor(str(warm / "p.yaml"), store=store, home=tmp_path, env=narrow)
    old = str(_newest(store)["run"])
    fast = conveyor(str(warm / "p.yaml"), store=store, home=tmp_path, env=narrow)
    assert not full.fast and fast.fast
    assert fast.stdout == full.stdout.replace(old, str(_newest(store)["run"]))
    assert max(len(line) for line in fast.stdout.splitlines()) <= 50
    assert conveyor(str(warm / "p.yaml"), store=store, home=tmp_path).fast  # the first width kept


def test_no_cache_and_resume_run_the_full_path(warm: Path, tmp_path: Path) -> None:
    store = _copy(warm, tmp_path)
    first = str(_newest(store)["run"])
    resumed = conveyor(str(warm / "p.yaml"), "--resume-from", first, store=store, home=tmp_path)
    assert not resumed.fast and resumed.code == 0
    assert _newest(store)["resumedFrom"] == first
    ran = conveyor(str(warm / "p.yaml"), "--no-cache", store=store, home=tmp_path)
    assert not ran.fast and ran.code == 0
    assert not any(_cached(_newest(store)).values())
