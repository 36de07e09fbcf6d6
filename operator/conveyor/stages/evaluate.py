"""evaluate: metrics on the held-out set, the gate, champion comparison, promotion, profile."""

from __future__ import annotations

import contextlib
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

LOWER_IS_BETTER = frozenset({"rmse", "mae"})


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


def better(metric: str, new: float, old: float, margin: float) -> bool:
    return new <= old - margin if metric in LOWER_IS_BETTER else new >= old + margin


def decide(
    opts: EvaluateOptions, metrics: dict[str, float], task: str, champion_score: float | None
) -> tuple[bool, str]:
    """(passed, why) for the gate and the champion comparison."""
    if opts.gate is None:
        return True, "no gate"
    gate = opts.gate
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if gate.metric not in metrics:
        raise StageError(
            f"gate metric {gate.metric!r} is not measured for {task}; use one of " + ", ".join(known)
        )
    value = metrics[gate.metric]
    if gate.min is not None and value < gate.min:
        return False, f"{gate.metric} {value:.4f} < min {gate.min}"
    if gate.max is not None and value > gate.max:
        return False, f"{gate.metric} {value:.4f} > max {gate.max}"
    why = f"{gate.metric} {value:.4f} passes the gate"
    if opts.compare_to == "champion" and champion_score is not None:
        if not better(gate.metric, value, champion_score, opts.min_improvement):
            return False, (
                f"{gate.metric} {value:.4f} does not beat the champion's "
                f"{champion_score:.4f} by {opts.min_improvement}"
            )
        why += f" and beats the champion's {champion_score:.4f}"
    return True, why


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

    champion = ctx.champion() if opts.compare_to == "champion" else None
    champion_score = None
    if champion is not None and opts.gate is not None:
        champion_score = _champion_score(ctx, champion, x, y, task, opts.gate.metric)
    passed, why = decide(opts, metrics, task, champion_score)

    train = read_table(ctx.input_path("train"))
    x_train = train.drop(columns=[target])
    profile = profile_table(x_train, model.predict(x_train), opts.profile_bins)
    profile.update(target=target, task=task, featureNames=list(x_train.columns))
    profile_ref = ctx.write_json("profile", profile)
    ctx.write_json("metrics", metrics, filename="evaluation.json")
    ctx.passthrough("model")
    promoted = passed and opts.promote
    if promoted:
        ctx.promote(
            Champion(
                run=ctx.inv.run,
                model=model_ref,
                profile=profile_ref,
                metrics=metrics,
                promoted_at=datetime.now(UTC),
            )
        )
    ctx.write_json(
        "decision",
        {"passed": passed, "promoted": promoted, "reason": why, "champion_score": champion_score},
    )
    ctx.metric("gate_passed", passed)
    ctx.metric("promoted", promoted)


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
