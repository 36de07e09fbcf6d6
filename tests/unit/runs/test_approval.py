"""`runs.approval`: approving promotes the recorded candidate through the champion's
compare-and-swap (compared again, on recorded metrics, with the champion current then),
rejecting records who and why; both are final and idempotent."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor.api.pipelinerun import ModelRecord
from conveyor.api.stages import EvaluateOptions
from conveyor.artifacts import champion as champions
from conveyor.artifacts.layout import JSON, Champion, RunRecord, read_run_record, write_run_record
from conveyor.artifacts.store import LocalStore, Store
from conveyor.engine.invocation import ArtifactRef
from conveyor.runs.approval import ApprovalError, approve, reject
from conveyor.stages.evaluate import candidate_record

NS, PIPE = "default", "p"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return LocalStore(tmp_path / "store")


def _model(run: str) -> ArtifactRef:
    return ArtifactRef(uri=f"file:///s/{NS}/{PIPE}/{run}/train/model.skops", sha256=run * 4, bytes=1)


def _champion(run: str, metrics: dict[str, float], version: int = 1) -> Champion:
    return Champion(
        run=run, stage="evaluate", model=_model(run), metrics=metrics, promoted_at=NOW, version=version
    )


def pending(store: Store, run: str, metrics: dict[str, float], options: dict[str, Any] | None = None) -> None:
    """A finished run whose evaluate stage (promotion: Manual) left `metrics`' model waiting."""
    opts = EvaluateOptions.model_validate(options or {"gate": {"metric": "accuracy", "min": 0.5}})
    body = json.dumps(candidate_record(_champion(run, metrics), opts)).encode()
    ref = store.write_bytes(f"{NS}/{PIPE}/{run}/evaluate/candidate.json", body, JSON)
    model = ModelRecord(
        uri=_model(run).uri, sha256=_model(run).sha256, metrics=metrics, stage="evaluate",
        decision="accuracy passes the gate; awaits approval", approval="Pending",
    )  # fmt: skip
    record = RunRecord(
        namespace=NS, pipeline=PIPE, run=run, phase="Succeeded", spec_digest="d", params={}, version="v",
        start_time=NOW, artifacts={"evaluate": {"candidate": ref, "model": _model(run)}}, model=model,
    )  # fmt: skip
    write_run_record(store, record)


def model_of(store: Store, run: str) -> ModelRecord:
    record = read_run_record(store, NS, PIPE, run)
    assert record is not None and record.model is not None
    return record.model


def champion(store: Store) -> Champion | None:
    return champions.current(store, NS, PIPE).champion


def test_approving_promotes_the_candidate_as_the_next_version_and_records_who(store: Store) -> None:
    champions.promote(
        store, NS, PIPE, champions.current(store, NS, PIPE), _champion("old", {"accuracy": 0.8})
    )
    pending(store, "r1", {"accuracy": 0.9})
    assert champion(store).run == "old"  # type: ignore[union-attr]  # waiting: nothing swapped
    decided = approve(store, NS, PIPE, "r1", "alice", now=NOW)
    assert decided.changed
    champ = champion(store)
    assert champ is not None and (champ.run, champ.version, champ.approved_by) == ("r1", 2, "alice")
    model = model_of(store, "r1")
    assert (model.approval, model.approved_by, model.approval_time) == ("Approved", "alice", NOW)
    assert (model.promoted, model.version) == (True, 2)
    assert "approved by alice; promoted as version 2" in model.decision
    assert [v.run for v in champions.list_versions(store, NS, PIPE)] == ["old", "r1"]


def test_approving_twice_changes_nothing_more(store: Store) -> None:
    pending(store, "r1", {"accuracy": 0.9})
    approve(store, NS, PIPE, "r1", "alice")
    again = approve(store, NS, PIPE, "r1", "bob")
    assert not again.changed and again.model.approved_by == "alice"
    assert [v.version for v in champions.list_versions(store, NS, PIPE)] == [1]


def test_an_approval_whose_record_was_lost_after_the_swap_makes_no_second_version(store: Store) -> None:
    pending(store, "r1", {"accuracy": 0.9})
    # the swap happened, the record was not rewritten (the approver died in between)
    champions.promote(store, NS, PIPE, champions.current(store, NS, PIPE), _champion("r1", {"accuracy": 0.9}))
    decided = approve(store, NS, PIPE, "r1", "alice")
    assert decided.changed and (decided.model.promoted, decided.model.version) == (True, 1)
    assert len(champions.list_versions(store, NS, PIPE)) == 1


def test_a_rejection_records_who_and_why_and_leaves_the_champion(store: Store) -> None:
    champions.promote(
        store, NS, PIPE, champions.current(store, NS, PIPE), _champion("old", {"accuracy": 0.8})
    )
    pending(store, "r1", {"accuracy": 0.9})
    decided = reject(store, NS, PIPE, "r1", "carol", "fails the bias review", now=NOW)
    assert decided.changed and champion(store).run == "old"  # type: ignore[union-attr]
    model = model_of(store, "r1")
    assert (model.approval, model.approved_by, model.approval_reason) == (
        "Rejected",
        "carol",
        "fails the bias review",
    )
    assert not model.promoted and "rejected by carol: fails the bias review" in model.decision
    assert not reject(store, NS, PIPE, "r1", "dave", "again").changed
    assert model_of(store, "r1").approval_reason == "fails the bias review"


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        pytest.param("approve", "reject", "was approved by alice; a decision is final", id="reject-approved"),
        pytest.param(
            "reject", "approve", "was rejected by alice (no); a decision is final", id="approve-rejected"
        ),
    ],
)
def test_a_decision_is_final(store: Store, first: str, then: str, message: str) -> None:
    pending(store, "r1", {"accuracy": 0.9})
    decide = {"approve": lambda: approve(store, NS, PIPE, "r1", "alice"),
              "reject": lambda: reject(store, NS, PIPE, "r1", "alice", "no")}  # fmt: skip
    decide[first]()
    with pytest.raises(ApprovalError, match=re.escape(message)):
        decide[then]()


def test_errors_name_the_problem(store: Store) -> None:
    with pytest.raises(ApprovalError, match="no run 'nope' of pipeline 'p'"):
        approve(store, NS, PIPE, "nope", "alice")
    pending(store, "r1", {"accuracy": 0.9})
    with pytest.raises(ApprovalError, match="needs a reason"):
        reject(store, NS, PIPE, "r1", "alice", "  ")
    record = read_run_record(store, NS, PIPE, "r1")
    assert record is not None and record.model is not None
    auto = record.model.model_copy(update={"approval": None, "promoted": True, "version": 1})
    write_run_record(store, record.model_copy(update={"model": auto}))
    with pytest.raises(ApprovalError, match=r"not awaiting approval.*promotion: Manual"):
        approve(store, NS, PIPE, "r1", "alice")


COMPARED = {"gate": {"metric": "accuracy", "min": 0.5}, "compareTo": "champion", "minImprovement": 0.01}
LOWER = {"gate": {"metric": "rmse", "max": 100}, "compareTo": "champion"}


@pytest.mark.parametrize(
    ("options", "champ", "mine", "promoted"),
    [
        pytest.param(COMPARED, {"accuracy": 0.95}, {"accuracy": 0.9}, False, id="overtaken-while-waiting"),
        pytest.param(COMPARED, {"accuracy": 0.895}, {"accuracy": 0.9}, False, id="not-by-min-improvement"),
        pytest.param(COMPARED, {"accuracy": 0.85}, {"accuracy": 0.9}, True, id="still-beats-it"),
        pytest.param(None, {"accuracy": 0.95}, {"accuracy": 0.9}, True, id="no-compareTo-promotes"),
        pytest.param(LOWER, {"rmse": 3.0}, {"rmse": 2.0}, True, id="rmse-lower-is-better"),
        pytest.param(LOWER, {"rmse": 1.0}, {"rmse": 2.0}, False, id="rmse-worse"),
    ],
)
def test_approval_compares_recorded_metrics_with_the_champion_at_commit_time(
    store: Store,
    options: dict[str, Any] | None,
    champ: dict[str, float],
    mine: dict[str, float],
    promoted: bool,
) -> None:
    pending(store, "r1", mine, options)
    champions.promote(store, NS, PIPE, champions.current(store, NS, PIPE), _champion("other", champ))
    decided = approve(store, NS, PIPE, "r1", "alice")
    assert decided.model.approval == "Approved" and decided.model.promoted is promoted
    assert champion(store).run == ("r1" if promoted else "other")  # type: ignore[union-attr]
    if not promoted:
        assert (
            "does not beat the champion's" in decided.model.decision
            and "not promoted" in decided.model.decision
        )


@pytest.mark.parametrize(
    ("racer", "promoted"), [(0.99, False), (0.7, True)], ids=["better-racer", "worse-racer"]
)
def test_a_champion_swapped_in_meanwhile_is_decided_against_again(
    store: Store, monkeypatch: pytest.MonkeyPatch, racer: float, promoted: bool
) -> None:
    """Another run promotes between the approver's read and its swap: the swap fails, and the
    approver reads the new champion and decides again."""
    pending(store, "r1", {"accuracy": 0.9}, COMPARED)
    real = champions.promote
    raced: list[bool] = []

    def promote_after_a_racer(
        s: Store, ns: str, p: str, state: champions.ChampionState, new: Champion
    ) -> bool:
        if not raced:
            raced.append(True)
            assert real(s, ns, p, state, _champion("racer", {"accuracy": racer}, state.next_version))
        return real(s, ns, p, state, new)

    monkeypatch.setattr(champions, "promote", promote_after_a_racer)
    decided = approve(store, NS, PIPE, "r1", "alice")
    assert raced and decided.model.promoted is promoted
    assert [v.run for v in champions.list_versions(store, NS, PIPE)] == (
        ["racer", "r1"] if promoted else ["racer"]
    )
