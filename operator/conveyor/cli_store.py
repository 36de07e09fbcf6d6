"""`conveyor runs | show | models`: what a store holds, printed as a table or `-o json|yaml|wide|name`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.cli_errors import CliError
from conveyor.cli_output import add_json_alias, add_output_option, dump, names, namespace, table

if TYPE_CHECKING:  # imported when a command runs, so that `conveyor --help` stays fast
    from conveyor.artifacts.layout import RunRecord
    from conveyor.artifacts.store import Store

Command = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, Command, str], argparse.ArgumentParser]

RUN_COLUMNS = ("run", "pipeline", "phase", "started", "model", "promoted")
WIDE_COLUMNS = ("namespace", "duration", "trigger", "message")


def record_data(record: RunRecord) -> dict[str, Any]:
    """A run record as `-o json|yaml` prints it: the record's own JSON form."""
    data: dict[str, Any] = record.model_dump(mode="json", by_alias=True)
    return data


def open_named_store(uri: str, source: str = "--store") -> Store:
    """The store at `uri`; an error says where the URI came from (`--store`, the pipeline's
    spec.artifacts.s3), not only what is wrong with it."""
    from conveyor.artifacts.store import StoreError, open_store

    try:
        return open_store(uri)
    except StoreError as err:
        raise CliError(f"{source}: {err}") from None


def _records(args: argparse.Namespace) -> tuple[Store, list[RunRecord]]:
    from conveyor.artifacts.layout import list_run_records

    store = open_named_store(args.store)
    records = list_run_records(store)
    if args.namespace is not None:
        records = [r for r in records if r.namespace == args.namespace]
    return store, records


def _row(r: RunRecord, wide: bool) -> tuple[str, ...]:
    metric = ""
    if r.model:
        name = next((m for m in ("accuracy", "r2") if m in r.model.metrics), None)
        metric = f"{name}={r.model.metrics[name]:.4f}" if name else ""
    row: tuple[str, ...] = (
        r.run,
        r.pipeline,
        r.phase,
        r.start_time.strftime("%Y-%m-%d %H:%M:%S"),
        metric,
        f"yes (v{r.model.version})" if r.model and r.model.promoted else "",
    )
    if wide:
        took = (r.completion_time - r.start_time).total_seconds() if r.completion_time else None
        message = r.message.splitlines()[0] if r.message else ""
        row += (r.namespace, f"{took:.1f}s" if took is not None else "", r.trigger, message)
    return row


def cmd_runs(args: argparse.Namespace) -> int:
    _, records = _records(args)
    if args.output in ("json", "yaml"):
        dump([record_data(r) for r in records], args.output)
    elif args.output == "name":
        names([r.run for r in records])
    else:
        if not records:  # as kubectl's "No resources found": a mistyped --store shows here
            where = f" (namespace {args.namespace})" if args.namespace else ""
            print(f"no runs in {args.store}{where}", file=sys.stderr)
        wide = args.output == "wide"
        columns = RUN_COLUMNS + WIDE_COLUMNS if wide else RUN_COLUMNS
        table(columns, [_row(r, wide) for r in records], nowrap=0)  # `show` needs the whole name
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from conveyor.cli_models import print_model_details
    from conveyor.local.progress import print_summary

    store, records = _records(args)
    found = [r for r in records if r.run == args.run]
    if not found:
        raise CliError(f"no run {args.run!r} in {args.store}; `conveyor runs` lists them")
    if len({(r.namespace, r.pipeline) for r in found}) > 1:
        where = ", ".join(sorted(f"{r.namespace}/{r.pipeline}" for r in found))
        raise CliError(f"run {args.run!r} is in several places ({where}); pass -n NAMESPACE")
    record = found[0]
    if args.output in ("json", "yaml"):
        dump(record_data(record), args.output)
    elif args.output == "name":
        names([record.run])
    else:
        console = Console()
        print_summary(console, record)
        print_model_details(console, store, record)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from conveyor.cli_models import cmd_models as list_models

    return list_models(args)


def add_store_commands(add: AddCommand, default_store: str) -> None:
    all_namespaces = "default: every namespace in the store"
    p = add("runs", cmd_runs, "List the runs in a store.")
    p.add_argument(
        "--store", default=default_store, help=f"folder or s3://bucket/prefix (default: {default_store})"
    )
    p.add_argument("--namespace", "-n", type=namespace, help=f"only this namespace's runs ({all_namespaces})")
    add_output_option(p)
    p = add("show", cmd_show, "Show one run from a store.")
    p.add_argument("run")
    p.add_argument("--store", default=default_store, help=f"default: {default_store}")
    p.add_argument("--namespace", "-n", type=namespace, help=f"the run's namespace ({all_namespaces})")
    add_output_option(p, ("json", "yaml", "name"), default="a summary")
    add_json_alias(p)
    p = add("models", cmd_models, "List a pipeline's promoted model versions (the last is the champion).")
    p.add_argument("pipeline")
    p.add_argument("--store", default=default_store, help=f"default: {default_store}")
    p.add_argument("--namespace", "-n", type=namespace, default="default", help="default: default")
    add_output_option(p)
    add_json_alias(p)
