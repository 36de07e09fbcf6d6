"""validate: enforce data expectations; infer them on the first run when none are given.

Inferred expectations: each column's type, its share of missing values (with headroom), the
categories of a categorical column, and a numeric column's range: the observed minimum and
maximum widened by `RANGE_MARGIN` of their span on each side (never below zero for a column
that had no negative value), so new data may move but a bill length of -50 is refused."""

from __future__ import annotations

import sys

import pandas as pd

from conveyor.api.stages import ColumnExpectation, Expectations, ValidateOptions
from conveyor.artifacts import expectations as learned
from conveyor.stages.context import StageContext, StageError
from conveyor.stages.tables import read_table

MAX_INFERRED_CATEGORIES = 50
RANGE_MARGIN = 0.5  # of the observed span, on each side


def inferred_range(series: pd.Series) -> tuple[float | None, float | None]:
    """(min, max) a numeric column is expected to stay within, from what was observed."""
    values = series.dropna()
    if values.empty:
        return None, None
    lo, hi = float(values.min()), float(values.max())
    margin = (hi - lo) * RANGE_MARGIN or abs(lo) * RANGE_MARGIN or 1.0
    low = lo - margin
    return (max(low, 0.0) if lo >= 0 else low), hi + margin


def dtype_of(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def _dtype_ok(expected: str, actual: str) -> bool:
    if expected == "numeric":
        return actual in ("integer", "float")
    if expected == "float":
        return actual in ("integer", "float")
    return expected == actual


def infer(df: pd.DataFrame) -> Expectations:
    columns = {}
    for name in df.columns:
        series = df[name]
        kind = dtype_of(series)
        nulls = float(series.isna().mean())
        allowed = None
        low, high = inferred_range(series) if kind in ("integer", "float") else (None, None)
        if kind in ("string", "bool"):
            values = series.dropna().unique()
            if len(values) <= MAX_INFERRED_CATEGORIES:
                allowed = sorted(str(v) if kind == "string" else bool(v) for v in values)
        columns[str(name)] = ColumnExpectation(
            dtype="numeric" if kind in ("integer", "float") else kind,
            max_null_fraction=min(1.0, round(nulls * 1.5 + 0.01, 4)) if nulls else 0.0,
            allowed=allowed,
            min=low,
            max=high,
        )
    return Expectations(min_rows=1, columns=columns)


def check(df: pd.DataFrame, exp: Expectations) -> list[str]:
    """Human-readable violations; empty when the data meets every expectation."""
    problems = []
    if exp.min_rows is not None and len(df) < exp.min_rows:
        problems.append(f"{len(df)} rows, expected at least {exp.min_rows}")
    for name, col in exp.columns.items():
        if name not in df.columns:
            if col.required:
                problems.append(f"column {name!r} is missing")
            continue
        series = df[name]
        actual = dtype_of(series)
        if col.dtype and not _dtype_ok(col.dtype, actual):
            problems.append(f"column {name!r} has type {actual}, expected {col.dtype}")
            continue
        nulls = float(series.isna().mean())
        if col.max_null_fraction is not None and nulls > col.max_null_fraction:
            problems.append(f"column {name!r} is {nulls:.1%} null, allowed {col.max_null_fraction:.1%}")
        values = series.dropna()
        if col.min is not None and actual in ("integer", "float") and (values < col.min).any():
            problems.append(
                f"column {name!r}: {(values < col.min).sum()} values below min "
                f"{col.min} (lowest {values.min()})"
            )
        if col.max is not None and actual in ("integer", "float") and (values > col.max).any():
            problems.append(
                f"column {name!r}: {(values > col.max).sum()} values above max "
                f"{col.max} (highest {values.max()})"
            )
        if col.allowed is not None:
            allowed = {str(a) for a in col.allowed}
            unknown = sorted({str(v) for v in values.unique()} - allowed)
            if unknown:
                problems.append(
                    f"column {name!r} has categories outside the allowed set: " + ", ".join(unknown[:10])
                )
    return problems


def expectations_of(ctx: StageContext, opts: ValidateOptions, df: pd.DataFrame) -> tuple[Expectations, str]:
    """The expectations to check `df` against, and where they came from: given, the pipeline's
    (inferred by an earlier run), or inferred from `df` now and kept as the pipeline's."""
    if opts.expectations is not None or not opts.infer:
        return opts.expectations or Expectations(), "given"
    inv = ctx.inv
    try:
        kept = learned.read(ctx.store, inv.namespace, inv.pipeline, inv.stage)
        if kept is None:
            inferred = infer(df)
            if learned.keep(ctx.store, inv.namespace, inv.pipeline, inv.stage, inferred):
                return inferred, "inferred now"
            kept = learned.read(ctx.store, inv.namespace, inv.pipeline, inv.stage)  # another run's
    except learned.CorruptExpectations as err:
        raise StageError(str(err)) from None
    return kept or Expectations(), "inferred earlier"


def run(ctx: StageContext) -> None:
    """Check the data; hand it on with a report and the expectations it met. Both outputs say
    only what was checked against what (not whether the expectations were inferred by this run
    or an earlier one, which goes to the log): the same data and expectations give the same
    bytes, so the stages after this one find their cached results."""
    opts = ValidateOptions.model_validate(ctx.options)
    df = read_table(ctx.input_path("data"))
    exp, source = expectations_of(ctx, opts, df)
    print(f"expectations {source}", file=sys.stderr)
    problems = check(df, exp)
    ctx.metric("rows", len(df))
    ctx.metric("violations", len(problems))
    if problems:
        raise StageError(
            f"data validation failed ({len(problems)} violation(s), expectations "
            f"{source}):\n" + "\n".join(f"  - {p}" for p in problems)
        )
    origin = "given" if source == "given" else "inferred"
    ctx.write_json("report", {"expectations": origin, "rows": len(df), "violations": problems})
    path = ctx.out_path("expectations.json")
    path.write_bytes(learned.canonical(exp))
    ctx.write("expectations", path, learned.JSON)
    ctx.passthrough("data")
