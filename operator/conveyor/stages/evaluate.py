"""evaluate: metrics on the held-out set, the gate (one condition or several), the champion
comparison, promotion (a compare-and-swap on the champion, `artifacts.champion`), profile.
With `promotion: Manual` a model that passes is not promoted: the stage writes it as its
`candidate` output and `runs.approval` promotes it when a human approves."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from conveyor.api.stages import CLASSIFICATION_METRICS, REGRESSION_METRICS, EvaluateOptions
from conveyor.artifacts.layout import Champion
from conveyor.artifacts.models import load_model
from conveyor.artifacts.store import StoreError
from conveyor.errors import UserError
from conveyor.stages.context import StageContext, StageError
from conveyor.stages.profile import profile_table
from conveyor.stages.tables import read_table

Test = tuple[pd.DataFrame, pd.Series]  # this run's held-out features and target


def score(model: Any, x: pd.DataFrame, y: pd.Series, task: str) -> dict[str, float]:
    from sklearn import metrics as m

    pred = model.predict(x)
    if task == "regression":
        return {
            "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
            "mae": float(m.mean_absolute_error(y, pred)),
            "r2": float(m.r2_score(y, pred)),
        }
    binary = y.nunique() <= 2
    avg = "binary" if binary else "macro"
    out = {
        "accuracy": float(m.accuracy_score(y, pred)),
        "precision": float(m.precision_score(y, pred, average=avg, zero_division=0)),
        "recall": float(m.recall_score(y, pred, average=avg, zero_division=0)),
        "f1": float(m.f1_score(y, pred, average=avg, zero_division=0)),
    }
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)
        with contextlib.suppress(ValueError):
            out["roc_auc"] = float(
                m.roc_auc_score(y, proba[:, 1]) if binary else m.roc_auc_score(y, proba, multi_class="ovr")
            )
    return out


def decide(
    opts: EvaluateOptions, metrics: dict[str, float], task: str, champion_score: float | None
) -> tuple[bool, str]:
    """(passed, why) for the gate's conditions (all must hold) and the champion comparison,
    which is on the first condition's metric."""
    gates = opts.gates
    if not gates:
        return True, "no gate"
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    for gate in gates:
        if gate.metric not in metrics:
            raise StageError(
                f"gate metric {gate.metric!r} is not measured for {task}; use one of " + ", ".join(known)
            )
    failed = []
    for gate in gates:
        value = metrics[gate.metric]
        if gate.min is not None and value < gate.min:
            failed.append(f"{gate.metric} {value:.4f} < min {gate.min}")
        if gate.max is not None and value > gate.max:
            failed.append(f"{gate.metric} {value:.4f} > max {gate.max}")
    if failed:
        return False, "; ".join(failed)
    measured = " and ".join(f"{g.metric} {metrics[g.metric]:.4f}" for g in gates)
    why = f"{measured} {'passes' if len(gates) == 1 else 'pass'} the gate"
    primary = gates[0].metric
    if opts.compare_to == "champion" and champion_score is not None:
        value = metrics[primary]
        if not opts.beats(primary, value, champion_score):
            return False, (
                f"{primary} {value:.4f} does not beat the champion's "
                f"{champion_score:.4f} by {opts.min_improvement}"
            )
        why += f" and beats the champion's {champion_score:.4f}"
    return True, why


@dataclass(frozen=True)
class Outcome:
    passed: bool
    why: str
    promoted: bool = False
    version: int | None = None  # the champion version this model is, if it is one
    champion_score: float | None = None
    awaiting_approval: bool = False  # promotion: Manual, and it passed: a human decides


# A promoter retries its swap each time another run promotes first: bounded by how many runs
# promote at once, so this only stops a store whose champion never settles.
MAX_SWAPS = 50


def settle(ctx: StageContext, opts: EvaluateOptions, candidate: Champion, test: Test, task: str) -> Outcome:
    """Decide against the champion current at commit time: read it, decide, and swap it for
    the candidate only if it is still the one decided against; else read and decide again."""
    passed, why = decide(opts, candidate.metrics, task, None)
    if not passed or (not opts.promote and opts.compare_to is None):
        return Outcome(passed, why)
    scores: dict[str, float | None] = {}  # champion model digest -> its score on this test set
    for _ in range(MAX_SWAPS):
        state = ctx.champion()
        champ = state.champion
        if champ is not None and champ.model.sha256 == candidate.model.sha256:
            # the same model: the very file (this run's stage promoted it and was then retried,
            # or a run resumed from this one), or the same bytes trained again (a --no-cache
            # re-run): the champion stays as it is, no new version of an identical model
            mine = champ.run == ctx.inv.run
            note = f"{why}; already the champion (version {champ.version}, run {champ.run})"
            return Outcome(True, note, promoted=mine, version=champ.version)
        champion_score = None
        if champ is not None and opts.compare_to == "champion" and opts.gates:
            if champ.model.sha256 not in scores:
                scores[champ.model.sha256] = _champion_score(ctx, champ, *test, task, opts.gates[0].metric)
            champion_score = scores[champ.model.sha256]
        passed, why = decide(opts, candidate.metrics, task, champion_score)
        if not (passed and opts.promote):
            return Outcome(passed, why, champion_score=champion_score)
        if opts.promotion == "Manual":
            why += "; awaits approval"
            return Outcome(True, why, champion_score=champion_score, awaiting_approval=True)
        new = candidate.model_copy(update={"version": state.next_version, "promoted_at": datetime.now(UTC)})
        if ctx.promote(state, new):
            return Outcome(
                True, f"{why}; promoted as version {new.version}", True, new.version, champion_score
            )
    raise StageError(
        f"the champion changed {MAX_SWAPS} times while this stage was deciding; run the stage again"
    )


def run(ctx: StageContext) -> None:
    opts = EvaluateOptions.model_validate(ctx.options)
    model_ref = ctx.input_ref("model")
    target, task = model_ref.meta["target"], model_ref.meta["task"]
    try:
        model = load_model(ctx.input_path("model"), model_ref.sha256)
    except UserError as err:  # refused: tampered with or untrusted
        raise StageError(str(err)) from None
    test = read_table(ctx.input_path("test"))
    x, y = test.drop(columns=[target]), test[target]
    metrics = score(model, x, y, task)
    for k, v in metrics.items():
        ctx.metric(k, v)

    train = read_table(ctx.input_path("train"))
    x_train = train.drop(columns=[target])
    profile = profile_table(x_train, model.predict(x_train), opts.profile_bins)
    profile.update(target=target, task=task, featureNames=list(x_train.columns))
    profile_ref = ctx.write_json("profile", profile)
    ctx.write_json("metrics", metrics, filename="evaluation.json")
    ctx.passthrough("model")
    candidate = Champion(
        run=ctx.inv.run,
        stage=ctx.inv.stage,
        model=model_ref,
        profile=profile_ref,
        metrics=metrics,
        promoted_at=datetime.now(UTC),
    )
    outcome = settle(ctx, opts, candidate, (x, y), task)
    if outcome.awaiting_approval:
        # what approving promotes: this model, and the options it is compared with again then
        ctx.write_json("candidate", candidate_record(candidate, opts))
    ctx.write_json(
        "decision",
        {
            "passed": outcome.passed,
            "promoted": outcome.promoted,
            "reason": outcome.why,
            "champion_score": outcome.champion_score,
            "version": outcome.version,
            "awaiting_approval": outcome.awaiting_approval,
            "run": ctx.inv.run,
            "stage": ctx.inv.stage,
        },
    )
    ctx.metric("gate_passed", outcome.passed)
    ctx.metric("promoted", outcome.promoted)


def candidate_record(candidate: Champion, opts: EvaluateOptions) -> dict[str, Any]:
    """The `candidate` output: the Champion this stage would have promoted (its version is given
    when it is approved) and the evaluate options that decide against the champion then."""
    return {
        "champion": candidate.model_dump(mode="json"),
        "options": opts.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def _champion_score(
    ctx: StageContext, champion: Champion, x: pd.DataFrame, y: pd.Series, task: str, metric: str
) -> float | None:
    """The champion scored on this run's test set; its recorded metric if it cannot be.

    A champion file that is refused (its digest differs from champion.json's, or it holds
    untrusted types) fails the stage: comparing against it would hide a tampered store.
    """
    try:
        path = ctx.store.local_path(ctx.store.key(champion.model.uri), ctx.workdir / "champion")
    except StoreError:
        return champion.metrics.get(metric)
    try:
        model = load_model(path, champion.model.sha256)
    except UserError as err:
        raise StageError(
            f"the champion {champion.model.uri} (run {champion.run}) was refused: {err}. "
            f"Inspect the store; to start afresh, delete {ctx.store.uri(ctx.pipeline_key('champion.json'))}"
        ) from None
    except ValueError:
        return champion.metrics.get(metric)
    try:
        return score(model, x, y, task).get(metric)
    except (ValueError, KeyError):
        return champion.metrics.get(metric)
