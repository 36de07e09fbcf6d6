"""A human's decision on a model that waits for approval (an evaluate stage with
`promotion: Manual`): `approve` promotes the run's recorded candidate, `reject` records why not.

Both executors use these: `conveyor approve|reject` locally, the PipelineRun reconciler when a
run's `spec.approval` is set. The run record is the source of truth: its model says Pending,
Approved or Rejected, by whom, when and why, and deciding again on a decided run changes nothing.

Approving is a compare-and-swap on the champion record like the stage's own promotion
(`artifacts.champion`). With `compareTo: champion`, the candidate is compared again with the
champion current at commit time, on the metrics both recorded when they were evaluated: the
operator never loads a model (it has no scikit-learn), so this is a comparison of the two
models' held-out scores, not a re-scoring on one test set. A candidate that a better champion
overtook while it waited is approved but not promoted, and the record says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from conveyor.api.pipelinerun import ModelRecord
from conveyor.api.stages import EvaluateOptions
from conveyor.artifacts import champion as champions
from conveyor.artifacts.layout import Champion, RunRecord, read_run_record, write_run_record
from conveyor.artifacts.store import Store, StoreError
from conveyor.errors import ConveyorError

# like the stage's own promotion: retried while other runs promote first
MAX_SWAPS = 50


class ApprovalError(ConveyorError):
    """The decision cannot be made (no such run, nothing awaits approval, already decided the
    other way); the message says what to do."""


@dataclass(frozen=True)
class Decided:
    """The run's record after the decision; `changed` is False when it had been made before."""

    record: RunRecord
    changed: bool

    @property
    def model(self) -> ModelRecord:
        assert self.record.model is not None
        return self.record.model


def _pending(store: Store, namespace: str, pipeline: str, run: str) -> tuple[RunRecord, ModelRecord]:
    record = read_run_record(store, namespace, pipeline, run)
    if record is None:
        raise ApprovalError(f"no run {run!r} of pipeline {pipeline!r} (namespace {namespace}) in the store")
    model = record.model
    if model is None or model.approval is None:
        raise ApprovalError(
            f"run {run!r} is not awaiting approval: only a model that passed an evaluate stage with "
            "`promotion: Manual` waits for one"
        )
    return record, model


def approve(
    store: Store, namespace: str, pipeline: str, run: str, by: str, now: datetime | None = None
) -> Decided:
    """Promote the run's candidate (unless a better champion landed meanwhile) and record that
    `by` approved it. Approving an approved run changes nothing; a rejected one is refused."""
    record, model = _pending(store, namespace, pipeline, run)
    if model.approval == "Approved":
        return Decided(record, changed=False)
    if model.approval == "Rejected":
        raise ApprovalError(
            f"run {run!r} was rejected by {model.approved_by or 'someone'} ({model.approval_reason}); "
            "a decision is final: start a new run to promote this pipeline's model"
        )
    when = now or datetime.now(UTC)
    candidate, opts = _candidate(store, record, model)
    update = _promote(store, namespace, pipeline, candidate, opts, by, when)
    note = update.pop("note", f"approved by {by}")
    update.update(
        approval="Approved", approved_by=by, approval_time=when, decision=f"{model.decision}; {note}"
    )
    decided = record.model_copy(update={"model": model.model_copy(update=update)})
    write_run_record(store, decided)
    return Decided(decided, changed=True)


def reject(
    store: Store, namespace: str, pipeline: str, run: str, by: str, reason: str, now: datetime | None = None
) -> Decided:
    """Record that `by` rejected the run's model and why; the champion stays as it is."""
    if not reason.strip():
        raise ApprovalError("a rejection needs a reason (--reason TEXT, or spec.approval.reason)")
    record, model = _pending(store, namespace, pipeline, run)
    if model.approval == "Rejected":
        return Decided(record, changed=False)
    if model.approval == "Approved":
        raise ApprovalError(
            f"run {run!r} was approved by {model.approved_by or 'someone'}; a decision is final "
            "(to replace its model, promote another run's)"
        )
    update = {
        "approval": "Rejected",
        "approved_by": by,
        "approval_reason": reason,
        "approval_time": now or datetime.now(UTC),
        "decision": f"{model.decision}; rejected by {by}: {reason}",
    }
    decided = record.model_copy(update={"model": model.model_copy(update=update)})
    write_run_record(store, decided)
    return Decided(decided, changed=True)


def _candidate(store: Store, record: RunRecord, model: ModelRecord) -> tuple[Champion, EvaluateOptions]:
    ref = record.artifacts.get(model.stage, {}).get("candidate")
    if ref is None:
        raise ApprovalError(f"run {record.run!r} has no candidate model recorded by stage {model.stage!r}")
    try:
        raw = json.loads(store.read_bytes(store.key(ref.uri)))
        return Champion.model_validate(raw["champion"]), EvaluateOptions.model_validate(raw["options"])
    except (StoreError, ValueError, KeyError, ValidationError) as err:
        raise ApprovalError(f"run {record.run!r}: its candidate {ref.uri} cannot be read: {err}") from None


def _promote(
    store: Store,
    namespace: str,
    pipeline: str,
    candidate: Champion,
    opts: EvaluateOptions,
    by: str,
    now: datetime,
) -> dict[str, object]:
    """Swap the candidate in as the next version; the ModelRecord fields that say what happened."""
    for _ in range(MAX_SWAPS):
        state = champions.current(store, namespace, pipeline)
        champ = state.champion
        # approved before (the record lost), or the same bytes: no new version of one model
        if champ is not None and champ.model.sha256 == candidate.model.sha256:
            return {"promoted": champ.run == candidate.run, "version": champ.version}
        overtaken = _overtaken(candidate, champ, opts)
        if overtaken:
            return {"promoted": False, "note": f"approved by {by}, but {overtaken}: not promoted"}
        new = candidate.model_copy(
            update={"version": state.next_version, "promoted_at": now, "approved_by": by}
        )
        if champions.promote(store, namespace, pipeline, state, new):
            return {
                "promoted": True,
                "version": new.version,
                "note": f"approved by {by}; promoted as version {new.version}",
            }
    raise ApprovalError(f"the champion changed {MAX_SWAPS} times while approving; approve again")


def _overtaken(candidate: Champion, champ: Champion | None, opts: EvaluateOptions) -> str:
    """Why the champion now beats the candidate (by its recorded metric), or ""."""
    if champ is None or opts.compare_to != "champion" or not opts.gates:
        return ""
    metric = opts.gates[0].metric
    new, old = candidate.metrics.get(metric), champ.metrics.get(metric)
    if new is None or old is None or opts.beats(metric, new, old):
        return ""
    return (
        f"{metric} {new:.4f} does not beat the champion's {old:.4f} by {opts.min_improvement} "
        f"(version {champ.version}, run {champ.run}, promoted while it waited)"
    )
