"""Reference profiles: the training data's per-feature distribution, for drift detection."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

QUANTILES = 101


def profile_table(x: pd.DataFrame, predictions: Any, bins: int) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for name in x.columns:
        series = x[name]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            features[str(name)] = numeric_profile(series.to_numpy(dtype=float), bins)
        else:
            features[str(name)] = categorical_profile(series)
    preds = pd.Series(np.asarray(predictions))
    if pd.api.types.is_float_dtype(preds):
        prediction = numeric_profile(preds.to_numpy(dtype=float), bins)
    else:
        prediction = categorical_profile(preds)
    return {"rows": len(x), "features": features, "prediction": prediction}


def numeric_profile(values: np.ndarray, bins: int) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"kind": "numeric", "count": 0, "nullFraction": 1.0}
    # Sorted once: the quantiles of sorted values are the same numbers and come without two more
    # partitions, and a bin's count is a difference of two positions in it (the values at or above
    # edge k-1 and below edge k, as `searchsorted(inner, finite, "right")` would bin them).
    ordered = np.sort(finite)
    edges = np.unique(np.quantile(ordered, np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1]
    below = np.searchsorted(ordered, inner, side="left")
    counts = np.diff(np.concatenate(([0], below, [ordered.size])))
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
        "quantiles": np.quantile(ordered, np.linspace(0, 1, QUANTILES)).tolist(),
    }


def categorical_profile(series: pd.Series) -> dict[str, Any]:
    values = series.dropna().astype(str)
    freq = values.value_counts(normalize=True)
    return {
        "kind": "categorical",
        "count": int(values.size),
        "nullFraction": float(series.isna().mean()) if len(series) else 0.0,
        "frequencies": {str(k): float(v) for k, v in freq.items()},
    }
