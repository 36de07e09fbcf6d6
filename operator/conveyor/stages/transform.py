"""transform: train/test split and the preprocessing that becomes part of the model.

The preprocessor is a scikit-learn ColumnTransformer (impute + scale numeric columns,
impute + encode categorical ones). The train stage puts it in front of the estimator, so
the saved model is one Pipeline and serving applies exactly the training features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from conveyor.api.stages import TransformOptions
from conveyor.artifacts.models import MEDIA_TYPE, save_model
from conveyor.stages.context import StageContext, StageError
from conveyor.stages.tables import PARQUET, is_classification, read_table, write_table


def build_preprocessor(df: pd.DataFrame, opts: TransformOptions) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        RobustScaler,
        StandardScaler,
    )

    numeric = [
        c
        for c in df.columns
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
    ]
    categorical = [c for c in df.columns if c not in numeric]
    num_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy=opts.numeric.impute))]
    scalers = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
    if opts.numeric.scale in scalers:
        num_steps.append(("scale", scalers[opts.numeric.scale]()))
    encoder = (
        OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        if opts.categorical.encode == "onehot"
        else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    )
    cat_steps = [
        ("impute", SimpleImputer(strategy=opts.categorical.impute, fill_value="missing")),
        ("encode", encoder),
    ]
    return ColumnTransformer(
        [
            ("numeric", Pipeline(num_steps), numeric),
            ("categorical", Pipeline(cat_steps), categorical),
        ],
        remainder="drop",
    )


def _target(ctx: StageContext, target: str | None, df: pd.DataFrame) -> str:
    """The label column: named by the data's producer, else by this stage's `target`."""
    producer = next((s for s, outs in ctx.inv.inputs.items() if "data" in outs), "?")
    if not target:
        raise StageError(
            f"the data from stage {producer!r} names no target column: set `target` on the "
            f"ingest stage, or `with: {{target: <column>}}` on this stage, or have a custom stage "
            f'write `"meta": {{"target": "<column>"}}` with its `data` output in outputs.json'
        )
    if target not in df.columns:
        raise StageError(
            f"target {target!r} is not a column of the data from stage {producer!r}; "
            f"its columns: {', '.join(map(str, df.columns[:20]))}"
        )
    return target


def run(ctx: StageContext) -> None:
    from sklearn.model_selection import train_test_split

    opts = TransformOptions.model_validate(ctx.options)
    ref = ctx.input_ref("data")
    df = read_table(ctx.input_path("data"))
    target = _target(ctx, ref.meta.get("target") or opts.target, df)
    unknown = [c for c in opts.drop if c not in df.columns]
    if unknown:
        raise StageError(f"drop: columns not in the data: {', '.join(unknown)}")
    features = df.drop(columns=[target, *opts.drop])
    # Categorical columns become plain objects so imputation with a string works.
    for col in features.columns:
        if not pd.api.types.is_numeric_dtype(features[col]):
            features[col] = features[col].astype(object).where(features[col].notna(), np.nan)
    y = df[target]
    classification = is_classification(y, opts.task)
    stratify = y if (opts.stratify if opts.stratify is not None else classification) else None
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            features, y, test_size=opts.test_size, random_state=opts.random_state, stratify=stratify
        )
    except ValueError as err:
        raise StageError(f"cannot split the data: {err}") from None
    pre = build_preprocessor(features, opts)
    pre.fit(x_train)
    task = "classification" if classification else "regression"
    meta = {"target": target, "task": task, "features": list(features.columns)}
    written = {}
    for name, x, y_part in (("train", x_train, y_train), ("test", x_test, y_test)):
        table = x.assign(**{target: y_part}).reset_index(drop=True)
        written[name] = ctx.write(name, write_table(table, ctx.out_path(f"{name}.parquet")), PARQUET, **meta)
    path = ctx.out_path("preprocessor.skops")
    save_model(pre, path)
    # fittedOn: the train stage fits its model on these rows and need not fit this again
    ctx.write("preprocessor", path, MEDIA_TYPE, **meta, fittedOn=written["train"].sha256)
    ctx.metric("train_rows", len(x_train))
    ctx.metric("test_rows", len(x_test))
    ctx.metric("features_in", features.shape[1])
    ctx.metric("features_out", len(pre.get_feature_names_out()))
