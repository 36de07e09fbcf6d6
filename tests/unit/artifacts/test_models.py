"""Model files: the trusted-type list regenerated from fitted models, and gadget files refused.

`GADGETS` and `write_gadget` are shared with the stage and serving tests.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import inspect
import os
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor.api.stages import ALLOWED_ESTIMATOR_MODULES, TransformOptions
from conveyor.artifacts.models import DigestMismatch, UntrustedModel, load_model, save_model
from conveyor.artifacts.trusted import TRUSTED_TYPES
from conveyor.errors import UserError
from conveyor.stages.train import make_estimator
from conveyor.stages.transform import build_preprocessor


def _function_step(func: Callable[..., Any]) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(FunctionTransformer(func=func))


def _gadget_numpy() -> Any:
    return _function_step(np.loadtxt)


def _gadget_scipy() -> Any:
    import scipy.optimize

    return _function_step(scipy.optimize.minimize)


def _gadget_sklearn() -> Any:
    from sklearn.utils.validation import check_array

    return _function_step(check_array)


def _gadget_class() -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(FunctionTransformer(kw_args={"x": argparse.Namespace(cmd="id")}))


# name -> (builder, the type get_untrusted_types reports for it)
GADGETS: dict[str, tuple[Callable[[], Any], str]] = {
    "numpy-function": (_gadget_numpy, "numpy.loadtxt"),
    "scipy-function": (_gadget_scipy, "scipy.optimize._minimize.minimize"),
    "sklearn-function": (_gadget_sklearn, "sklearn.utils.validation.check_array"),
    "non-estimator-class": (_gadget_class, "argparse.Namespace"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_gadget(name: str, path: Path) -> str:
    """Save gadget `name` to `path`; the type it smuggles in."""
    build, smuggled = GADGETS[name]
    save_model(build(), path)
    return smuggled


# -- the trusted list, regenerated -------------------------------------------------------------

# Classes make_estimator accepts but the train stage can never save, and why.
UNTRAINABLE = {
    "StackingClassifier": "needs estimator objects, which `params` (JSON) cannot express",
    "StackingRegressor": "needs estimator objects, which `params` (JSON) cannot express",
    "VotingClassifier": "needs estimator objects, which `params` (JSON) cannot express",
    "VotingRegressor": "needs estimator objects, which `params` (JSON) cannot express",
    "MultiTaskElasticNet": "needs a 2-D target; the stages train on one target column",
    "MultiTaskElasticNetCV": "needs a 2-D target; the stages train on one target column",
    "MultiTaskLasso": "needs a 2-D target; the stages train on one target column",
    "MultiTaskLassoCV": "needs a 2-D target; the stages train on one target column",
}
# Parameters that change which types a fitted model holds.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    *[
        ("sklearn.linear_model.SGDClassifier", {"loss": loss})
        for loss in ("hinge", "log_loss", "modified_huber", "perceptron", "huber")
    ],
    *[("sklearn.linear_model.SGDRegressor", {"loss": loss}) for loss in ("huber", "epsilon_insensitive")],
    *[
        ("sklearn.ensemble.GradientBoostingRegressor", {"loss": loss, "n_estimators": 3})
        for loss in ("absolute_error", "huber", "quantile")
    ],
    *[
        ("sklearn.ensemble.HistGradientBoostingRegressor", {"loss": loss, "max_iter": 3})
        for loss in ("absolute_error", "gamma", "poisson")
    ],
    ("sklearn.ensemble.HistGradientBoostingRegressor", {"loss": "quantile", "quantile": 0.5, "max_iter": 3}),
    *[
        ("sklearn.linear_model.TweedieRegressor", {"power": p, "link": link})
        for p in (0, 1, 1.5, 2, 3)
        for link in ("auto", "identity", "log")
    ],
    *[
        (f"sklearn.neural_network.{cls}", {"solver": s, "max_iter": 5})
        for cls in ("MLPClassifier", "MLPRegressor")
        for s in ("adam", "sgd", "lbfgs")
    ],
    *[
        ("sklearn.neighbors.KNeighborsClassifier", {"algorithm": a})
        for a in ("ball_tree", "kd_tree", "brute")
    ],
    # 5 features after preprocessing: a, b and c one-hot (u, v, w)
    ("sklearn.neighbors.KNeighborsClassifier", {"algorithm": "ball_tree", "metric": "minkowski", "p": 3}),
    (
        "sklearn.neighbors.KNeighborsClassifier",
        {"algorithm": "ball_tree", "metric": "seuclidean", "metric_params": {"V": [1.0] * 5}},
    ),
]


# Binary targets: a loss of their own.
BINARY: list[tuple[str, dict[str, Any]]] = [
    ("sklearn.ensemble.GradientBoostingClassifier", {"loss": "exponential", "n_estimators": 3}),
    ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 3}),
    ("sklearn.linear_model.LogisticRegression", {}),
]
# Smaller than the defaults, same fitted types: the test stays fast.
FAST = {"n_estimators": 3, "max_iter": 10, "cv": 2, "Cs": 2, "max_subpopulation": 100}


def _metric_variants() -> list[tuple[str, dict[str, Any]]]:
    from sklearn.neighbors import VALID_METRICS

    # haversine: 2-D data (below); seuclidean: V (above); mahalanobis needs an array VI, which
    # JSON params cannot give; pyfunc: a function
    skip = {"haversine", "pyfunc", "seuclidean", "mahalanobis"}
    return [
        ("sklearn.neighbors.KNeighborsClassifier", {"algorithm": "ball_tree", "metric": m})
        for m in sorted(set(VALID_METRICS["ball_tree"]) - skip)
    ]


def _frames() -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    rng = np.random.default_rng(0)
    n = 60
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    x["c"] = pd.Series(rng.choice(["u", "v", "w"], n), dtype=object)
    x.loc[::9, "c"] = np.nan
    x.loc[::7, "a"] = np.nan
    return x, pd.Series(rng.choice(["p", "q", "r"], n)), pd.Series(np.abs(rng.normal(size=n)) + 0.1)


def _trainable() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every class the train stage accepts and can save (it scores the model before saving)."""
    from sklearn.base import BaseEstimator

    for family in ALLOWED_ESTIMATOR_MODULES:
        module = importlib.import_module(family)
        for name in sorted(dir(module)):
            cls = getattr(module, name)
            if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)) or inspect.isabstract(cls):
                continue
            if hasattr(cls, "score") and name not in UNTRAINABLE:
                params: dict[str, Any] = {
                    k: v for k, v in FAST.items() if k in inspect.signature(cls).parameters
                }
                if name == "QuadraticDiscriminantAnalysis":
                    params["reg_param"] = 0.5
                if name == "OrthogonalMatchingPursuitCV":  # max_iter caps the features it uses
                    params.pop("max_iter")
                yield f"{family}.{name}", params


def fitted_examples() -> Iterator[tuple[str, Any]]:
    """(label, object) for what the transform and train stages write."""
    from sklearn.base import is_regressor
    from sklearn.pipeline import Pipeline

    x, y_class, y_reg = _frames()
    for scale in ("standard", "minmax", "robust", "none"):
        for encode in ("onehot", "ordinal"):
            opts = TransformOptions.model_validate(
                {"numeric": {"scale": scale}, "categorical": {"encode": encode}}
            )
            yield f"preprocessor-{scale}-{encode}", build_preprocessor(x, opts).fit(x)
    # min-max scaling: the naive Bayes models need non-negative inputs
    minmax = TransformOptions.model_validate({"numeric": {"scale": "minmax"}})
    y_binary = (y_class == "p").astype(int)
    cases = [(p, kw, False) for p, kw in [*_trainable(), *VARIANTS, *_metric_variants()]]
    for path, params, binary in [*cases, *[(p, kw, True) for p, kw in BINARY]]:
        est = make_estimator(path, params)
        y = y_binary if binary else y_reg if is_regressor(est) or path.endswith("KernelDensity") else y_class
        model = Pipeline([("preprocess", build_preprocessor(x, minmax)), ("model", est)])
        model.fit(x, y)
        model.score(x, y)
        yield f"{path}{params}", model
    two_d = x[["a", "b"]].fillna(0.0).clip(-1.5, 1.5)
    yield (
        "haversine",
        make_estimator(
            "sklearn.neighbors.KNeighborsClassifier", {"algorithm": "ball_tree", "metric": "haversine"}
        ).fit(two_d, y_class),
    )


def test_trusted_types_cover_every_model_the_stages_write(tmp_path: Path) -> None:
    import skops.io as sio

    missing: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, obj in fitted_examples():
            path = tmp_path / "m.skops"
            save_model(obj, path)
            for t in sio.get_untrusted_types(file=path):
                if t not in TRUSTED_TYPES:
                    missing.setdefault(t, label)
            load_model(path, sha256(path))
    assert missing == {}, f"add to conveyor/artifacts/trusted.py (type: first model needing it): {missing}"


@pytest.mark.parametrize("name", sorted(TRUSTED_TYPES))
def test_every_trusted_type_is_a_class_named_exactly(name: str) -> None:
    module_name, _, attr = name.rpartition(".")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, type), f"{name} is not a class (a function must never be trusted)"
    assert f"{obj.__module__}.{obj.__qualname__}" == name


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GADGETS))
def test_gadgets_are_refused_naming_file_and_type(tmp_path: Path, name: str) -> None:
    import skops.io as sio

    path = tmp_path / f"{name}.skops"
    smuggled = write_gadget(name, path)
    assert sio.get_untrusted_types(file=path) == [smuggled]  # the gadget is what it says
    with pytest.raises(UntrustedModel) as err:
        load_model(path, sha256(path))  # the digest is right: the type check must refuse it
    assert str(path) in str(err.value) and smuggled in str(err.value)


def test_a_file_whose_digest_differs_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"not even a zip file")
    recorded = "0" * 64
    with pytest.raises(DigestMismatch) as err:
        load_model(path, recorded)
    actual = sha256(path)
    assert str(path) in str(err.value) and recorded in str(err.value) and actual in str(err.value)
    assert (err.value.expected, err.value.actual) == (recorded, actual)


def test_a_file_that_is_not_skops_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"not even a zip file")
    with pytest.raises(UserError, match="is not a skops model file"):
        load_model(path, sha256(path))


def test_a_model_the_stages_write_loads_and_predicts(tmp_path: Path) -> None:
    from sklearn.pipeline import Pipeline

    x, y, _ = _frames()
    pre = build_preprocessor(x, TransformOptions())
    model = Pipeline(
        [("preprocess", pre), ("model", make_estimator("sklearn.tree.DecisionTreeClassifier", {}))]
    )
    model.fit(x, y)
    path = tmp_path / "model.skops"
    save_model(model, path)
    loaded = load_model(path, sha256(path))
    assert loaded.predict(x).tolist() == model.predict(x).tolist()


def a_day_later() -> Callable[[], float]:
    """A clock a day ahead of the real one (for `time.time`)."""
    ahead = time.time() + 86400
    return lambda: ahead


def test_every_model_the_stages_write_saves_to_the_same_bytes_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same model gives the same file, whoever saves it and when: a stage's outputs are in
    the cache keys of the stages after it. skops alone names arrays after memory addresses and
    dates members with the clock (a copy, saved a second later, differed in every array name)."""
    differed = []
    for label, model in fitted_examples():
        first, second = tmp_path / "first.skops", tmp_path / "second.skops"
        save_model(model, first)
        with monkeypatch.context() as later:  # saved a day later, every object at a new address
            later.setattr(time, "time", a_day_later())
            save_model(copy.deepcopy(model), second)
        if first.read_bytes() != second.read_bytes():
            differed.append(label)
        loaded = load_model(second, sha256(second))
        assert type(loaded) is type(model), label
    assert differed == []
    with zipfile.ZipFile(first) as archive:
        assert {m.date_time for m in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        names = archive.namelist()
    assert names == [*(f"{i}.npy" for i in range(1, len(names))), "schema.json"]


SET_OF_NAMES = """
import sys
from pathlib import Path
from conveyor.artifacts.models import save_model
path = Path(sys.argv[1])
save_model({"names": {f"feature-{i}" for i in range(20)}}, path)
"""


def test_a_set_is_saved_in_the_same_order_whatever_the_hash_seed(tmp_path: Path) -> None:
    """Python orders a set of strings by their hashes, which differ between processes: the
    archive lists a set's items sorted."""
    files = []
    for seed in ("0", "1", "2"):
        path = tmp_path / f"{seed}.skops"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", SET_OF_NAMES, str(path)], check=True, env=env, timeout=120)
        files.append(path.read_bytes())
    assert files[0] == files[1] == files[2]


def test_a_sparse_matrix_saved_later_is_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sparse matrix is a member of its own (`.npz`), named after its address by skops too."""
    import scipy.sparse

    matrix = scipy.sparse.csr_matrix(np.eye(4))
    first, second = tmp_path / "first.skops", tmp_path / "second.skops"
    save_model({"m": matrix}, first)
    monkeypatch.setattr(time, "time", a_day_later())
    save_model({"m": matrix.copy()}, second)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == ["1.npz", "schema.json"]
