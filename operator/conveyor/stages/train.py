"""train: fit preprocessor + estimator as one Pipeline, optionally tuned by a CV search
(grid, random or bayes: stages/search.py)."""

from __future__ import annotations

import importlib
from typing import Any

from conveyor.api.stages import TrainOptions
from conveyor.artifacts.models import MEDIA_TYPE, load_model, save_model
from conveyor.errors import UserError
from conveyor.stages.context import StageContext, StageError
from conveyor.stages.export import export_onnx
from conveyor.stages.search import run_search
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
    estimator = make_estimator(opts.estimator, opts.params)
    model = Pipeline([("preprocess", clone(pre)), ("model", estimator)])
    if opts.search:  # each candidate and fold fits its own preprocessor
        model = run_search(ctx, model, opts.search, x, y)
    else:
        try:
            if ctx.input_ref("preprocessor").meta.get("fittedOn") == train_ref.sha256:
                # fitted by the transform stage on exactly these rows: fitting it again gives the same
                estimator.fit(pre.transform(x), y)
                model = Pipeline([("preprocess", pre), ("model", estimator)])
            else:
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
