"""train: fit preprocessor + estimator as one Pipeline, optionally tuned by CV search."""

from __future__ import annotations

import importlib
from typing import Any

from conveyor.api.stages import SearchOptions, TrainOptions
from conveyor.artifacts.models import MEDIA_TYPE, load_model, save_model
from conveyor.errors import UserError
from conveyor.stages.context import StageContext, StageError
from conveyor.stages.export import export_onnx
from conveyor.stages.tables import read_table


def make_estimator(path: str, params: dict[str, Any]) -> Any:
    from sklearn.base import BaseEstimator

    module_name, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise StageError(f"{path} is not a scikit-learn estimator class")
    try:
        return cls(**params)
    except TypeError as err:
        raise StageError(f"invalid params for {path}: {err}") from None


def _search(ctx: StageContext, model: Any, s: SearchOptions, x: Any, y: Any) -> Any:
    """The best pipeline of a CV search over the estimator's parameters, recorded in `ctx`."""
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    space = {f"model__{k}": v for k, v in s.space.items()}
    common: dict[str, Any] = {
        "cv": s.cv,
        "scoring": s.scoring,
        "n_jobs": s.n_jobs,
        "refit": True,
    }
    search = (
        GridSearchCV(model, space, **common)
        if s.type == "grid"
        else RandomizedSearchCV(model, space, n_iter=s.n_iter, random_state=s.random_state, **common)
    )
    try:
        search.fit(x, y)
    except ValueError as err:
        raise StageError(f"search failed: {err}") from None
    model = search.best_estimator_
    ctx.metric("cv_best_score", search.best_score_)
    ctx.metric("candidates", len(search.cv_results_["params"]))
    best = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
    ctx.write_json("search", {"best_params": best, "best_score": search.best_score_})
    return model


def run(ctx: StageContext) -> None:
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    opts = TrainOptions.model_validate(ctx.options)
    train_ref = ctx.input_ref("train")
    target, task = train_ref.meta["target"], train_ref.meta["task"]
    if opts.task != "auto":
        task = opts.task
    df = read_table(ctx.input_path("train"))
    x, y = df.drop(columns=[target]), df[target]
    try:
        pre = load_model(ctx.input_path("preprocessor"), ctx.input_ref("preprocessor").sha256)
    except UserError as err:  # refused: tampered with or untrusted
        raise StageError(str(err)) from None
    model = Pipeline([("preprocess", clone(pre)), ("model", make_estimator(opts.estimator, opts.params))])
    if opts.search:
        model = _search(ctx, model, opts.search, x, y)
    else:
        try:
            model.fit(x, y)
        except ValueError as err:
            raise StageError(f"training failed: {err}") from None
    ctx.metric("train_score", model.score(x, y))
    path = ctx.out_path("model.skops")
    save_model(model, path)
    ctx.write(
        "model",
        path,
        MEDIA_TYPE,
        target=target,
        task=task,
        estimator=opts.estimator,
        features=list(x.columns),
    )
    test = read_table(ctx.input_path("test"))
    export_onnx(ctx, model, test.drop(columns=[target]), x)
    ctx.passthrough("test")
    ctx.passthrough("train")
