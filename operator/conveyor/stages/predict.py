"""predict: batch scoring. A table from an upstream stage (ingest's `data`) is scored with a
pipeline's champion or a pinned model; the predictions (and, for a classifier, one probability
column per class) are written as Parquet next to the input's kept columns, and the batch's
drift against the model's reference profile is recorded as metrics and as `drift.json`.

The model is found through the store's records (`champion.json`, a promoted version under
`_versions/`, or the outputs.json of the stage that wrote a pinned model) and loaded only with
the SHA-256 they give it. The drift statistics are the model server's (`serving/drift.py`),
computed over the whole batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from conveyor.api.stages import ModelChoice, PredictOptions
from conveyor.artifacts.champion import read_version
from conveyor.artifacts.layout import ArtifactPath, read_champion, read_result, read_run_record
from conveyor.artifacts.models import load_model
from conveyor.artifacts.store import Store, StoreError
from conveyor.drift import encode, encoded_drift
from conveyor.engine.invocation import ArtifactRef
from conveyor.errors import UserError
from conveyor.stages.context import StageContext, StageError
from conveyor.stages.tables import PARQUET, read_table, write_table


@dataclass(frozen=True)
class Chosen:
    """The model a batch is scored with, as the store's records describe it."""

    model: ArtifactRef
    profile: ArtifactRef | None
    run: str
    source: str  # "champion of <pipeline>" or "pinned"


def choose_model(store: Store, namespace: str, choice: ModelChoice) -> Chosen:
    pipeline = choice.from_pipeline
    if pipeline is None:
        assert choice.uri is not None  # ModelChoice holds exactly one
        return pinned_model(store, choice.uri)
    if choice.version is not None:
        promoted = read_version(store, namespace, pipeline, choice.version)
        if promoted is None:
            raise StageError(
                f"model.version: pipeline {pipeline!r} has no version {choice.version} in {store.root} "
                f"(namespace {namespace}); `conveyor models {pipeline}` lists its versions"
            )
        return Chosen(
            promoted.model, promoted.profile, promoted.run, f"version {choice.version} of {pipeline}"
        )
    champion = read_champion(store, namespace, pipeline)
    if champion is None:
        raise StageError(
            f"model.fromPipeline: pipeline {pipeline!r} has no promoted model in {store.root} "
            f"(namespace {namespace}); run it until a model passes its gate, or pin model.uri"
        )
    return Chosen(champion.model, champion.profile, champion.run, f"champion of {pipeline}")


def pinned_model(store: Store, uri: str) -> Chosen:
    """A model URI inside `store`, with the digest its stage's outputs.json records for it and
    the reference profile its run evaluated it with (None if that run recorded none)."""
    try:
        key = store.key(uri)
        where = ArtifactPath.from_uri(uri)
    except StoreError as err:
        raise StageError(f"model.uri: {err}; pin a run's model inside the store {store.root}") from None
    if where.key != key:
        raise StageError(
            f"model.uri: {uri} is not a run's model (<store>/<ns>/<pipeline>/<run>/<stage>/<file>)"
        )
    result = read_result(store, where.run.stage(where.stage))
    ref = result.outputs.get("model") if result else None
    if ref is None or store.key(ref.uri) != key:
        raise StageError(
            f"model.uri: no record of {uri}: the outputs.json of its stage does not list it, "
            "so its SHA-256 cannot be checked; pin the model output of a committed stage"
        )
    record = read_run_record(store, where.run.namespace, where.run.pipeline, where.run.run)
    profile = None
    for outputs in record.artifacts.values() if record else ():
        beside = outputs.get("model")
        if beside is not None and beside.sha256 == ref.sha256 and "profile" in outputs:
            profile = outputs["profile"]
    return Chosen(ref, profile, where.run.run, "pinned")


def load_chosen(ctx: StageContext, chosen: Chosen) -> Any:
    try:
        path = ctx.store.local_path(ctx.store.key(chosen.model.uri), ctx.workdir / "model")
        return load_model(path, chosen.model.sha256)
    except (StoreError, UserError) as err:  # missing, tampered with or untrusted
        raise StageError(f"cannot score with {chosen.model.uri} ({chosen.source}): {err}") from None


def read_profile(ctx: StageContext, ref: ArtifactRef | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    try:
        data = ctx.store.read_bytes(ctx.store.key(ref.uri))
    except StoreError as err:
        raise StageError(f"cannot read the reference profile {ref.uri}: {err}") from None
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise StageError(f"the reference profile {ref.uri} was changed after it was recorded")
    profile: dict[str, Any] = json.loads(data)
    return profile


def features_of(model: Any, ref: ArtifactRef, table: pd.DataFrame, input_name: str) -> list[str]:
    features = ref.meta.get("features") or list(getattr(model, "feature_names_in_", []))
    missing = [f for f in features if f not in table.columns]
    if missing:
        raise StageError(
            f"input {input_name!r} lacks the model's feature column(s) {', '.join(map(repr, missing))}; "
            f"it has: {', '.join(map(str, table.columns[:30]))}"
        )
    return [str(f) for f in features]


def score_table(model: Any, table: pd.DataFrame, x: pd.DataFrame, opts: PredictOptions) -> pd.DataFrame:
    """The kept input columns, the predictions and, for a classifier, each class's probability."""
    keep = list(table.columns) if opts.keep is None else opts.keep
    absent = [c for c in keep if c not in table.columns]
    if absent:
        raise StageError(f"keep: column(s) {', '.join(map(repr, absent))} not in the input")
    out = table[keep].reset_index(drop=True)
    added: dict[str, Any] = {opts.prediction_column: model.predict(x)}
    if opts.probabilities and hasattr(model, "predict_proba") and hasattr(model, "classes_"):
        proba = model.predict_proba(x)
        for i, cls in enumerate(model.classes_):
            added[f"{opts.probability_prefix}{cls}"] = proba[:, i]
    clash = [c for c in added if c in out.columns]
    if clash:
        raise StageError(
            f"output column(s) {', '.join(map(repr, clash))} already in the kept input columns; "
            "set predictionColumn or probabilityPrefix, or leave them out of keep"
        )
    return pd.concat([out, pd.DataFrame(added)], axis=1)


def _encoded(profile: dict[str, Any], series: pd.Series) -> np.ndarray:
    """A column as the drift statistics take it (`drift.encode`): a numeric column straight to
    float64 with NaN where missing, any other through Python values with None where missing."""
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if profile.get("kind") == "numeric" and numeric:
        return np.asarray(series.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    return encode(profile, list(series.astype(object).where(series.notna(), None)))


def batch_drift(
    profile: dict[str, Any], x: pd.DataFrame, predictions: Any, method: str, threshold: float
) -> dict[str, Any]:
    """Per-feature drift of the whole batch against the profile, its largest value (`method`,
    else PSI, as the server's drift score) and the features above `threshold`."""
    stats = {
        name: encoded_drift(fp, _encoded(fp, x[name]))
        for name, fp in profile.get("features", {}).items()
        if name in x.columns
    }
    chosen = {name: m.get(method, m.get("psi", 0.0)) for name, m in stats.items() if m}
    prediction = profile.get("prediction")
    return {
        "method": method,
        "threshold": threshold,
        "score": max(chosen.values(), default=0.0),
        "drifted": sorted(name for name, value in chosen.items() if value > threshold),
        "features": stats,
        "prediction": encoded_drift(prediction, _encoded(prediction, pd.Series(np.asarray(predictions))))
        if prediction
        else {},
    }


def run(ctx: StageContext) -> None:
    opts = PredictOptions.model_validate(ctx.options)
    chosen = choose_model(ctx.store, ctx.inv.namespace, opts.model)
    model = load_chosen(ctx, chosen)
    table = read_table(ctx.input_path(opts.input))
    if table.empty:
        raise StageError(f"nothing to score: input {opts.input!r} has no rows")
    x = table[features_of(model, chosen.model, table, opts.input)]
    try:
        scored = score_table(model, table, x, opts)
    except ValueError as err:
        raise StageError(f"scoring failed: {err}") from None
    about = {"model": chosen.model.uri, "modelSha256": chosen.model.sha256, "modelRun": chosen.run}
    path = write_table(scored, ctx.out_path("predictions.parquet"))
    ctx.write("predictions", path, PARQUET, source=chosen.source, task=chosen.model.meta.get("task"), **about)
    ctx.metric("rows", len(scored))
    profile = read_profile(ctx, chosen.profile)
    if profile is None:
        ctx.write_json("drift", {**about, "reference": None, "reason": "the model has no reference profile"})
        return
    drift = batch_drift(profile, x, scored[opts.prediction_column], opts.drift_method, opts.drift_threshold)
    ctx.write_json("drift", {**about, "reference": chosen.profile.uri if chosen.profile else None, **drift})
    ctx.metric("drift_score", drift["score"])
    ctx.metric("drifted_features", len(drift["drifted"]))
    if "psi" in drift["prediction"]:
        ctx.metric("prediction_drift", drift["prediction"]["psi"])
