"""`conveyor approve|reject`: the decision on a local store's run, and clear errors (no
traceback) for an unknown run, a run that awaits nothing and a decision already made."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.artifacts import champion as champions
from conveyor.artifacts.store import LocalStore
from conveyor.cli import main
from tests.unit.runs.test_approval import NS, PIPE, model_of, pending


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    pending(store, "r1", {"accuracy": 0.9})
    return store


def _cli(store: LocalStore, *argv: str) -> list[str]:
    return [*argv, "--store", str(store.path)]


def test_approve_promotes_and_says_the_version(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(store, "approve", "r1", "--as", "alice")) == 0
    assert "approved run r1: its model is version 1 of p" in capsys.readouterr().out
    assert champions.current(store, NS, PIPE).champion.approved_by == "alice"  # type: ignore[union-attr]
    assert main(_cli(store, "approve", "r1", "--as", "bob")) == 0
    assert "already approved by alice: nothing to do" in capsys.readouterr().out


def test_reject_records_the_reason(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(store, "reject", "r1", "--as", "carol", "--reason", "bias review")) == 0
    assert "rejected run r1: bias review" in capsys.readouterr().out
    assert model_of(store, "r1").approval_reason == "bias review"
    assert champions.current(store, NS, PIPE).champion is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["approve", "nope"], "no run 'nope' (namespace default)", id="unknown-run"),
        pytest.param(
            ["approve", "r1", "--pipeline", "q"], "no run 'r1' of pipeline 'q'", id="other-pipeline"
        ),
        pytest.param(["approve", "r1", "-n", "prod"], "no run 'r1' (namespace prod)", id="other-namespace"),
        pytest.param(["reject", "r1", "--reason", " "], "a rejection needs a reason", id="blank-reason"),
    ],
)
def test_errors_are_messages(
    store: LocalStore, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(_cli(store, *argv)) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_reject_needs_a_reason(store: LocalStore) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(_cli(store, "reject", "r1"))
    assert exit_.value.code == 2
