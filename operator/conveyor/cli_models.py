"""`conveyor models PIPELINE`: a pipeline's promoted model versions; and the model part of
`conveyor show` (its version, its approval, the hyperparameters it was trained with)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from conveyor.artifacts.champion import list_versions
from conveyor.artifacts.layout import RunRecord, read_run_record
from conveyor.artifacts.store import Store, StoreError
from conveyor.cli_errors import CliError
from conveyor.cli_output import dump, names, table

COLUMNS = ("version", "run", "metrics", "promoted at", "trigger", "approved by")
WIDE_COLUMNS = ("stage", "model", "sha256")


def _metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def cmd_models(args: argparse.Namespace) -> int:
    from conveyor.cli_store import open_named_store

    store = open_named_store(args.store)
    versions = list_versions(store, args.namespace, args.pipeline)
    if not versions:
        raise CliError(
            f"pipeline {args.pipeline!r} (namespace {args.namespace}) has no promoted model in {args.store}; "
            "a run promotes one when its model passes the evaluate stage's gate"
        )
    triggers = {v.run: _trigger(store, args.namespace, args.pipeline, v.run) for v in versions}
    latest = versions[-1].version
    if args.output in ("json", "yaml"):
        rows = [
            {
                "version": v.version,
                "champion": v.version == latest,
                "run": v.run,
                "stage": v.stage,
                "model": v.model.uri,
                "sha256": v.model.sha256,
                "metrics": v.metrics,
                "promotedAt": v.promoted_at.isoformat(),
                "trigger": triggers[v.run],
                "approvedBy": v.approved_by,
            }
            for v in versions
        ]
        dump(rows, args.output)
        return 0
    if args.output == "name":  # what a ModelDeployment's model.version takes
        names([str(v.version) for v in versions])
        return 0
    wide = args.output == "wide"
    rows_: list[tuple[str, ...]] = [
        (
            f"{v.version}{' *' if v.version == latest else ''}",
            v.run,
            _metrics(v.metrics),
            v.promoted_at.strftime("%Y-%m-%d %H:%M:%S"),
            triggers[v.run],
            v.approved_by,
        )
        + ((v.stage, v.model.uri, v.model.sha256[:12]) if wide else ())
        for v in versions
    ]
    columns = COLUMNS + WIDE_COLUMNS if wide else COLUMNS
    table(columns, rows_, caption="* the champion (served by fromPipeline without a version)")
    return 0


def _trigger(store: Store, namespace: str, pipeline: str, run: str) -> str:
    """What started the run, from its record ("" while it runs, or when it is gone)."""
    try:
        record = read_run_record(store, namespace, pipeline, run)
    except (StoreError, ValueError):
        return ""
    return record.trigger if record is not None else ""


def hyperparameters(store: Store, record: RunRecord) -> dict[str, str]:
    """The hyperparameters of the run's model: as recorded, else (a record written before they
    were) the best parameters of the search that produced it."""
    if record.model is None:
        return {}
    if record.model.hyperparameters:
        return dict(record.model.hyperparameters)
    for outputs in record.artifacts.values():
        model, search = outputs.get("model"), outputs.get("search")
        if model is not None and search is not None and model.uri == record.model.uri:
            try:
                best = json.loads(store.read_bytes(store.key(search.uri))).get("best_params") or {}
            except (StoreError, ValueError):
                return {}
            return {k: v if isinstance(v, str) else json.dumps(v) for k, v in sorted(best.items())}
    return {}


def print_model_details(console: Console, store: Store, record: RunRecord) -> None:
    """What `show` adds under the summary: the model's version and hyperparameters."""
    if record.model is None:
        return
    if record.model.version is not None:
        note = "promoted by this run" if record.model.promoted else "promoted earlier"
        console.print(f"  version: {record.model.version} ({note}; `conveyor models {record.pipeline}`)")
    model = record.model
    if model.approval == "Pending":
        console.print(f"  approval: Pending (`conveyor approve {record.run}` or `conveyor reject`)")
    elif model.approval is not None:
        why = f": {model.approval_reason}" if model.approval_reason else ""
        console.print(f"  approval: {model.approval} by {model.approved_by or 'someone'}{why}")
    chosen = hyperparameters(store, record)
    if chosen:
        console.print("  hyperparameters: " + ", ".join(f"{k}={v}" for k, v in chosen.items()))
    else:
        console.print(
            "  hyperparameters: none recorded (a built-in train stage without params: the defaults)"
        )
