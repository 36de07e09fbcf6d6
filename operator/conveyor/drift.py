"""Drift statistics of a window of recent values against the training profile (numpy only).

PSI (population stability index) over the profile's quantile bins, Kolmogorov-Smirnov against
the profile's quantile function, PSI and Pearson's chi-squared over category frequencies.
Rules of thumb: PSI < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.

A window stores what these statistics need and nothing more: float64 values (NaN for missing)
for a numeric feature, and for a categorical one a small integer code per value
(`category_codes`): the index of its category in the profile, `len(categories)` for any other
value, `MISSING` for None. The statistics of a list of values and of its codes are identical.

The model server's drift window (`serving/monitor.py`) and the batch `predict` stage both use
these functions, so a batch and live traffic are judged alike; hence this module sits at the
bottom of the layers, beside `contract` and `errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

EPS = 1e-4  # smoothing for empty bins, so PSI stays finite
MISSING = -1  # the code of a missing (None) categorical value


def _psi(ref: np.ndarray, cur: np.ndarray) -> float:
    ref = np.clip(ref, EPS, None)
    cur = np.clip(cur, EPS, None)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_psi(profile: dict[str, Any], values: np.ndarray) -> float:
    edges = np.asarray(profile["binEdges"], dtype=float)
    ref = np.asarray(profile["binFractions"], dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(ref))
    return _psi(ref, counts / counts.sum())


def numeric_ks(profile: dict[str, Any], values: np.ndarray) -> float:
    """sup |F_ref(x) - F_cur(x)|, F_ref interpolated from the profile's 101 quantiles."""
    quantiles = np.asarray(profile["quantiles"], dtype=float)
    finite = np.sort(values[np.isfinite(values)])
    if finite.size == 0:
        return 0.0
    probs = np.linspace(0, 1, len(quantiles))
    ref_cdf = np.interp(finite, quantiles, probs, left=0.0, right=1.0)
    n = finite.size
    upper = np.arange(1, n + 1) / n
    lower = np.arange(0, n) / n
    return float(max(np.max(np.abs(upper - ref_cdf)), np.max(np.abs(ref_cdf - lower))))


def to_floats(values: Sequence[Any]) -> np.ndarray:
    """Values -> float64, NaN for None and for anything that is not a representable number."""
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError, OverflowError):
        return np.fromiter((_to_float(v) for v in values), dtype=float, count=len(values))


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def code_dtype(profile: dict[str, Any]) -> np.dtype[Any]:
    """The smallest signed integer type holding every code of this categorical profile."""
    return np.min_scalar_type(-(len(profile["frequencies"]) + 1))


def category_codes(profile: dict[str, Any], values: Sequence[Any]) -> np.ndarray:
    """Values -> codes (see the module docstring); a value matches a category by `str()`."""
    index = {c: i for i, c in enumerate(profile["frequencies"])}
    other = len(index)
    codes = [MISSING if v is None else index.get(str(v), other) for v in values]
    return np.asarray(codes, dtype=code_dtype(profile))


def _category_counts(profile: dict[str, Any], codes: np.ndarray) -> np.ndarray:
    """Counts per reference category, then the count of other values; missing values left out."""
    present = codes[codes != MISSING].astype(np.intp)
    return np.bincount(present, minlength=len(profile["frequencies"]) + 1)


def _psi_of_counts(profile: dict[str, Any], counts: np.ndarray) -> float:
    total = int(counts.sum())
    if total == 0:
        return 0.0
    ref = np.array([*profile["frequencies"].values(), 0.0])
    return _psi(ref, counts / total)


def _chi2_of_counts(profile: dict[str, Any], counts: np.ndarray) -> float:
    """Pearson's statistic over the reference categories; values outside them count in the
    total, so a new category shows up as a shortfall everywhere else."""
    total = int(counts.sum())
    if total == 0:
        return 0.0
    observed = counts[:-1].astype(float)
    expected = np.clip(np.array(list(profile["frequencies"].values())) * total, EPS, None)
    return float(np.sum((observed - expected) ** 2 / expected))


def categorical_psi(profile: dict[str, Any], values: Sequence[Any]) -> float:
    return _psi_of_counts(profile, _category_counts(profile, category_codes(profile, values)))


def categorical_chi2(profile: dict[str, Any], values: Sequence[Any]) -> float:
    return _chi2_of_counts(profile, _category_counts(profile, category_codes(profile, values)))


def encode(profile: dict[str, Any], values: Sequence[Any]) -> np.ndarray:
    """Values -> what a window stores for this profile: floats if numeric, else codes."""
    if profile.get("kind") == "numeric":
        return to_floats(values)
    return category_codes(profile, values)


def window_dtype(profile: dict[str, Any]) -> np.dtype[Any]:
    """The dtype `encode` returns for this profile."""
    return np.dtype(float) if profile.get("kind") == "numeric" else code_dtype(profile)


def encoded_drift(profile: dict[str, Any], encoded: np.ndarray) -> dict[str, float]:
    """Method -> statistic for one feature, from `encode`d values."""
    if profile.get("kind") == "numeric":
        if not profile.get("count"):
            return {}
        return {"psi": numeric_psi(profile, encoded), "ks": numeric_ks(profile, encoded)}
    counts = _category_counts(profile, encoded)
    return {"psi": _psi_of_counts(profile, counts), "chi2": _chi2_of_counts(profile, counts)}


def feature_drift(profile: dict[str, Any], values: Sequence[Any]) -> dict[str, float]:
    """Method -> statistic for one feature."""
    return encoded_drift(profile, encode(profile, values))
