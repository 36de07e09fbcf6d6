"""Drift statistics on synthetic data with known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor.drift import (
    _psi,
    categorical_chi2,
    categorical_psi,
    feature_drift,
    numeric_ks,
    numeric_psi,
)
from conveyor.stages.profile import categorical_profile, numeric_profile

RNG = np.random.default_rng(0)
TRAIN = RNG.normal(10, 2, 5000)
PROFILE = numeric_profile(TRAIN, bins=10)


def test_same_distribution_is_stable() -> None:
    sample = RNG.normal(10, 2, 1000)
    assert numeric_psi(PROFILE, sample) < 0.05
    assert numeric_ks(PROFILE, sample) < 0.06


@pytest.mark.parametrize(("shift", "psi_over"), [(1.5, 0.25), (1.2, 0.1)])
def test_scaled_feature_drifts(shift: float, psi_over: float) -> None:
    sample = RNG.normal(10, 2, 1000) * shift
    assert numeric_psi(PROFILE, sample) > psi_over
    assert numeric_ks(PROFILE, sample) > 0.2


def test_ks_matches_scipy_within_quantile_resolution() -> None:
    from scipy.stats import ks_2samp

    sample = RNG.normal(11, 2, 800)
    ours = numeric_ks(PROFILE, sample)
    exact = ks_2samp(TRAIN, sample).statistic
    assert abs(ours - exact) < 0.02


def test_categorical() -> None:
    profile = categorical_profile(pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20))
    same = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    assert categorical_psi(profile, same) == pytest.approx(0, abs=1e-9)
    assert categorical_chi2(profile, same) == pytest.approx(0, abs=1e-9)
    shifted = ["a"] * 10 + ["b"] * 10 + ["d"] * 80  # a new category
    assert categorical_psi(profile, shifted) > 1
    assert categorical_chi2(profile, shifted) > 50


def test_feature_drift_ignores_missing_values() -> None:
    out = feature_drift(PROFILE, [*RNG.normal(10, 2, 500).tolist(), None, None])
    assert set(out) == {"psi", "ks"} and out["psi"] < 0.1


def _categorical_reference(profile: dict[str, Any], values: list[Any]) -> tuple[float, float]:
    """The statistics as computed before the window stored category codes (from lists)."""
    ref_freq: dict[str, float] = profile["frequencies"]
    cats = [*ref_freq, "__other__"]
    counts = dict.fromkeys(cats, 0)
    seen = [str(v) for v in values if v is not None]
    for key in seen:
        counts[key if key in ref_freq else "__other__"] += 1
    total = len(seen)
    ref = np.array([ref_freq.get(c, 0.0) for c in cats])
    cur = np.array([counts[c] / total for c in cats])
    observed = np.array([seen.count(c) for c in ref_freq], dtype=float)
    expected = np.clip(np.array(list(ref_freq.values())) * total, 1e-4, None)
    return _psi(ref, cur), float(np.sum((observed - expected) ** 2 / expected))


@pytest.mark.parametrize(
    "values",
    [
        ["a", "b", "c", None, "d", 1, 2.5, True],
        [1, 2, 2, 3, None, "1"],
        ["b"] * 7 + [None] * 3,
    ],
    ids=["mixed", "numbers-as-categories", "one-category"],
)
def test_category_codes_keep_the_statistics(values: list[Any]) -> None:
    profile = categorical_profile(pd.Series(["a", "b", "b", "c", "1", "2", "True", "2.5"]))
    psi, chi2 = _categorical_reference(profile, values)
    assert categorical_psi(profile, values) == psi
    assert categorical_chi2(profile, values) == chi2
