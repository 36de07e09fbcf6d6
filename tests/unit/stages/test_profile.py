"""Reference profiles: `numeric_profile` sorts once and reads quantiles and bin counts off the
sorted values; the profile must be the one the plain computation gives, number for number."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conveyor.stages.profile import QUANTILES, numeric_profile


def plain_profile(values: np.ndarray[Any, Any], bins: int) -> dict[str, Any]:
    """The computation without the shortcut: quantiles of the unsorted values, every value binned."""
    finite = values[np.isfinite(values)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, finite, side="right"), minlength=len(inner) + 1)
    return {
        "kind": "numeric",
        "count": int(finite.size),
        "nullFraction": float(1 - finite.size / values.size),
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "binEdges": inner.tolist(),
        "binFractions": (counts / counts.sum()).tolist(),
        "quantiles": np.quantile(finite, np.linspace(0, 1, QUANTILES)).tolist(),
    }


RNG = np.random.default_rng(3)
CASES = {
    "normal": RNG.normal(0, 1, 5000),
    "ties on the edges": RNG.integers(0, 4, 3001).astype(float),  # edges fall on repeated values
    "with NaN and inf": np.concatenate([RNG.exponential(2, 999), [np.nan, np.inf, -np.inf, np.nan]]),
    "one value": np.full(50, 7.5),
    "two values": np.array([1.0, 2.0]),
}


@pytest.mark.parametrize("bins", [1, 2, 10, 37])
@pytest.mark.parametrize("name", list(CASES))
def test_the_profile_is_the_plain_computations(name: str, bins: int) -> None:
    values = RNG.permutation(CASES[name])
    assert numeric_profile(values, bins) == plain_profile(values, bins)


def test_no_finite_value() -> None:
    assert numeric_profile(np.array([np.nan, np.inf]), 10) == {
        "kind": "numeric",
        "count": 0,
        "nullFraction": 1.0,
    }
