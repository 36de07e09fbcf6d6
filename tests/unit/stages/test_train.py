"""The train stage fits its estimator on the preprocessor the transform stage fitted, when that
preprocessor was fitted on exactly the rows train gets (its `fittedOn` digest): the model is the
one a refit gives, and a preprocessor fitted on other rows is fitted again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor.artifacts.layout import ArtifactRef
from conveyor.artifacts.models import load_model, save_model
from tests.unit.stages.test_stages import Chain, csv_with_gaps

LOGREG = {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 2000}}
RIDGE = {"estimator": "sklearn.linear_model.Ridge", "params": {}}


def loaded(ref: ArtifactRef) -> Any:
    return load_model(Path(ref.uri.removeprefix("file://")), ref.sha256)


def saved(obj: Any, tmp_path: Path) -> bytes:
    """The bytes `save_model` writes for `obj` (canonical: equal objects, equal bytes)."""
    save_model(obj, tmp_path / "saved.skops")
    return (tmp_path / "saved.skops").read_bytes()


def table(ref: ArtifactRef) -> pd.DataFrame:
    return pd.read_parquet(ref.uri.removeprefix("file://"))


def prepared(tmp_path: Path, source: str, target: str, state: int = 7) -> Chain:
    chain = Chain(tmp_path)
    chain.run("ingest", "ingest", {"source": source, "target": target}, [])
    chain.run("transform", "transform", {"testSize": 0.25, "randomState": state}, ["ingest"])
    return chain


def without_fitted_on(chain: Chain) -> None:
    """The transform's outputs as a transform before `fittedOn` wrote them: train refits."""
    out = chain.outputs["transform"]
    meta = {k: v for k, v in out["preprocessor"].meta.items() if k != "fittedOn"}
    chain.outputs["refit"] = {**out, "preprocessor": out["preprocessor"].model_copy(update={"meta": meta})}


@pytest.mark.parametrize(
    ("source", "target", "options"),
    [("sklearn://breast_cancer", "target", LOGREG), ("CSV", "price", RIDGE)],  # CSV: categorical, gaps
)
def test_the_model_is_the_one_a_refit_gives(
    tmp_path: Path, source: str, target: str, options: dict[str, Any]
) -> None:
    chain = prepared(tmp_path, str(csv_with_gaps(tmp_path)) if source == "CSV" else source, target)
    pre = chain.outputs["transform"]["preprocessor"]
    assert pre.meta["fittedOn"] == chain.outputs["transform"]["train"].sha256
    reused = loaded(chain.run("train", "train", options, ["transform"]).outputs["model"])
    without_fitted_on(chain)
    refit = loaded(chain.run("train", "train", options, ["refit"], run="r2").outputs["model"])

    # The transform stage's preprocessor, as it saved it, is the model's first step.
    assert saved(reused.named_steps["preprocess"], tmp_path) == saved(loaded(pre), tmp_path)
    test = table(chain.outputs["transform"]["test"]).drop(columns=[target])
    np.testing.assert_array_equal(reused.predict(test), refit.predict(test))
    # (refit's bytes may differ in skops' object ids only: a category string shared or not)
    steps = reused.named_steps["preprocess"], refit.named_steps["preprocess"]
    np.testing.assert_array_equal(steps[0].transform(test), steps[1].transform(test))


def test_a_preprocessor_fitted_on_other_rows_is_fitted_again(tmp_path: Path) -> None:
    chain = prepared(tmp_path, "sklearn://breast_cancer", "target", state=7)
    other = chain.run("other", "transform", {"testSize": 0.25, "randomState": 8}, ["ingest"]).outputs
    mixed = {**chain.outputs["transform"], "preprocessor": other["preprocessor"]}
    chain.outputs["mixed"] = mixed
    model = loaded(chain.run("train", "train", LOGREG, ["mixed"]).outputs["model"])
    fitted = model.named_steps["preprocess"].named_transformers_["numeric"].named_steps["scale"].mean_
    own = loaded(chain.outputs["transform"]["preprocessor"])
    theirs = loaded(mixed["preprocessor"])
    np.testing.assert_array_equal(fitted, own.named_transformers_["numeric"].named_steps["scale"].mean_)
    assert not np.array_equal(fitted, theirs.named_transformers_["numeric"].named_steps["scale"].mean_)
