"""Drift statistics on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conveyor.serving.drift import categorical_chi2, categorical_psi, feature_drift, numeric_ks, numeric_psi
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
