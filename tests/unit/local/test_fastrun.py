"""The fast path's own decisions (`local.fastrun`): which requests it leaves to the full path,
a memo it cannot reuse, and its claim of a run name."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.local import fastrun

PLAIN = {
    "command": "run",
    "fn": None,
    "file": "p.yaml",
    "param": [],
    "store": None,
    "no_cache": False,
    "resume_from": None,
    "launch": "fork",
    "namespace": None,
    "output": None,
    "allow_rejected": False,
}


@pytest.mark.parametrize(
    "change",
    [
        {"no_cache": True},
        {"resume_from": "r-1"},
        {"store": "s3://bucket/prefix"},
        {"param": ["novalue"]},
        {"param": ["=x"]},
        {"since": "yesterday"},  # an option this path does not know
    ],
)
def test_requests_it_leaves_to_the_full_path(change: dict[str, Any]) -> None:
    assert fastrun._plain(argparse.Namespace(**PLAIN))
    assert not fastrun._plain(argparse.Namespace(**{**PLAIN, **change}))


def test_no_memo_means_the_full_path(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("kind: Pipeline\n")
    args = argparse.Namespace(**{**PLAIN, "file": str(tmp_path / "p.yaml"), "store": str(tmp_path / "s")})
    assert fastrun.fast_run(args, ".conveyor") is None


def _memo(old: str, outputs: str) -> dict[str, Any]:
    stage = {"name": "ingest", "startTime": "t", "finishTime": "t"}
    record = {"run": old, "startTime": "t", "completionTime": "t", "stages": [stage]}
    return {"record": record, "commits": {"ingest": {"metrics": "{}", "outputs": outputs}}}


def test_a_memo_whose_old_name_shows_elsewhere_is_not_reused() -> None:
    assert fastrun._template(_memo("p-1", json.dumps({"uri": "file:///s/p-0/x"}))) is not None
    assert fastrun._template(_memo("p-1", json.dumps({"uri": "file:///s/p-1/x"}))) is None


def test_a_taken_name_is_drawn_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter(["p-a", "p-a", "p-b"])
    monkeypatch.setattr(fastrun, "new_run_name", lambda pipeline: next(draws))
    assert fastrun._claim(tmp_path, "default", "p") == "p-a"
    assert fastrun._claim(tmp_path, "default", "p") == "p-b"
    assert (tmp_path / "default" / "p" / "p-b" / ".claim").is_file()
