"""Drift statistics of a window of recent values against the training profile (numpy only).

PSI (population stability index) over the profile's quantile bins, Kolmogorov-Smirnov against
the profile's quantile function, PSI and Pearson's chi-squared over category frequencies.
Rules of thumb: PSI < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

EPS = 1e-4  # smoothing for empty bins, so PSI stays finite


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


def categorical_psi(profile: dict[str, Any], values: Sequence[Any]) -> float:
    ref_freq: dict[str, float] = profile["frequencies"]
    cats = [*ref_freq, "__other__"]
    counts = dict.fromkeys(cats, 0)
    for v in values:
        if v is None:
            continue
        key = str(v)
        counts[key if key in ref_freq else "__other__"] += 1
    total = sum(counts.values())
    if total == 0:
        return 0.0
    ref = np.array([ref_freq.get(c, 0.0) for c in cats])
    cur = np.array([counts[c] / total for c in cats])
    return _psi(ref, cur)


def categorical_chi2(profile: dict[str, Any], values: Sequence[Any]) -> float:
    """Pearson's statistic over the reference categories; values outside them count in the
    total, so a new category shows up as a shortfall everywhere else."""
    ref_freq: dict[str, float] = profile["frequencies"]
    seen = [str(v) for v in values if v is not None]
    total = len(seen)
    if total == 0:
        return 0.0
    observed = np.array([seen.count(c) for c in ref_freq], dtype=float)
    expected = np.clip(np.array(list(ref_freq.values())) * total, EPS, None)
    return float(np.sum((observed - expected) ** 2 / expected))


def feature_drift(profile: dict[str, Any], values: Sequence[Any]) -> dict[str, float]:
    """Method -> statistic for one feature."""
    if profile.get("kind") == "numeric":
        if not profile.get("count"):
            return {}
        arr = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        return {"psi": numeric_psi(profile, arr), "ks": numeric_ks(profile, arr)}
    return {"psi": categorical_psi(profile, values), "chi2": categorical_chi2(profile, values)}
