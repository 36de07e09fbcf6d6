"""ingest: a bundled scikit-learn dataset, a CSV/Parquet file or an s3:// object -> Parquet."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from conveyor.api.stages import IngestOptions
from conveyor.artifacts.store import S3Store
from conveyor.stages.context import StageContext, StageError
from conveyor.stages.tables import PARQUET, write_table

SKLEARN_DATASETS = (
    "breast_cancer",
    "iris",
    "wine",
    "diabetes",
    "digits",
    "linnerud",
)


def load_source(source: str, workdir: Path) -> tuple[pd.DataFrame, str | None]:
    """The table behind a source, and its default target column if it has one."""
    parsed = urlparse(source)
    if parsed.scheme == "sklearn":
        name = parsed.netloc or parsed.path.strip("/")
        if name not in SKLEARN_DATASETS:
            raise StageError(
                f"unknown dataset sklearn://{name}; use one of "
                + ", ".join(f"sklearn://{n}" for n in SKLEARN_DATASETS)
            )
        import sklearn.datasets

        frame = getattr(sklearn.datasets, f"load_{name}")(as_frame=True).frame
        return frame, "target"
    if parsed.scheme == "s3":
        store = S3Store(parsed.netloc)
        path = store.local_path(parsed.path.lstrip("/"), workdir)
    elif parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else source)
    else:
        raise StageError(f"unsupported source {source!r}: use sklearn://, a file path or s3://")
    if not path.is_file():
        raise StageError(f"source file {source} does not exist")
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path), None
    if path.suffix in (".csv", ".gz", ".txt"):
        return pd.read_csv(path), None
    raise StageError(f"cannot tell the format of {source}: name it .csv or .parquet")


def run(ctx: StageContext) -> None:
    opts = IngestOptions.model_validate(ctx.options)
    df, default_target = load_source(opts.source, ctx.workdir)
    target = opts.target or default_target
    if opts.columns:
        missing = [c for c in opts.columns if c not in df.columns]
        if missing:
            raise StageError(f"columns not in the source: {', '.join(missing)}")
        df = df[opts.columns + ([target] if target and target not in opts.columns else [])]
    if target is not None:
        if target not in df.columns:
            raise StageError(
                f"target column {target!r} is not in the source; columns: "
                + ", ".join(map(str, df.columns[:20]))
            )
        if opts.drop_missing_target:
            before = len(df)
            df = df[df[target].notna()].reset_index(drop=True)
            ctx.metric("dropped_missing_target", before - len(df))
    df.columns = [str(c) for c in df.columns]
    path = write_table(df, ctx.out_path("data.parquet"))
    ctx.write("data", path, PARQUET, target=target)
    ctx.metric("rows", len(df))
    ctx.metric("columns", len(df.columns))
