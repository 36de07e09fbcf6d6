"""Reading and writing tables (Parquet) for the stages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PARQUET = "application/vnd.apache.parquet"


def write_table(df: pd.DataFrame, path: Path) -> Path:
    df.to_parquet(path, index=False)
    return path


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def is_classification(y: pd.Series, task: str = "auto") -> bool:
    """Classification when the target is not numeric or has few distinct integer values."""
    if task != "auto":
        return task == "classification"
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return True
    values = y.dropna()
    integral = bool((values == values.round()).all())
    return integral and values.nunique() <= max(20, int(0.05 * len(values)))
