"""`conveyor approve RUN` and `conveyor reject RUN --reason TEXT`: a human's decision on a model
that waits for approval (`promotion: Manual`), in a local store. On a cluster, set the
PipelineRun's `spec.approval` instead (see `runs.approval`)."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable
from typing import TYPE_CHECKING

from conveyor.cli_errors import CliError
from conveyor.cli_output import namespace

if TYPE_CHECKING:  # imported when a command runs, so that `conveyor --help` stays fast
    from conveyor.artifacts.layout import RunRecord
    from conveyor.artifacts.store import Store
    from conveyor.runs.approval import Decided

Command = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, Command, str], argparse.ArgumentParser]


def _find(store: Store, args: argparse.Namespace) -> RunRecord:
    from conveyor.artifacts.layout import list_run_records

    found = [
        r
        for r in list_run_records(store)
        if r.run == args.run and r.namespace == args.namespace and args.pipeline in (None, r.pipeline)
    ]
    if not found:
        of = f" of pipeline {args.pipeline!r}" if args.pipeline else ""
        raise CliError(
            f"no run {args.run!r}{of} (namespace {args.namespace}) in {args.store}; "
            "`conveyor runs` lists them"
        )
    if len({r.pipeline for r in found}) > 1:
        names = ", ".join(sorted({r.pipeline for r in found}))
        raise CliError(f"run {args.run!r} exists in several pipelines ({names}); pass --pipeline")
    return found[0]


def _decide(args: argparse.Namespace, decide: Callable[[Store, RunRecord, str], Decided]) -> Decided:
    from conveyor.cli_store import open_named_store
    from conveyor.runs.approval import ApprovalError

    store = open_named_store(args.store)
    record = _find(store, args)
    try:
        return decide(store, record, args.as_ or getpass.getuser())
    except ApprovalError as err:
        raise CliError(str(err)) from None


def cmd_approve(args: argparse.Namespace) -> int:
    from conveyor.runs.approval import approve

    decided = _decide(args, lambda s, r, by: approve(s, r.namespace, r.pipeline, r.run, by))
    model = decided.model
    if not decided.changed:
        print(f"run {args.run} was already approved by {model.approved_by}: nothing to do")
    elif model.promoted:
        print(f"approved run {args.run}: its model is version {model.version} of {decided.record.pipeline}")
    else:
        print(f"approved run {args.run}, but its model was not promoted: {model.decision}")
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    from conveyor.runs.approval import reject

    decided = _decide(args, lambda s, r, by: reject(s, r.namespace, r.pipeline, r.run, by, args.reason))
    if not decided.changed:
        print(f"run {args.run} was already rejected by {decided.model.approved_by}: nothing to do")
    else:
        print(f"rejected run {args.run}: {args.reason} (the champion stays as it is)")
    return 0


def add_approval_commands(add: AddCommand, default_store: str) -> None:
    for name, fn, help_ in (
        ("approve", cmd_approve, "Approve a run's model that awaits approval: it is promoted."),
        ("reject", cmd_reject, "Reject a run's model that awaits approval, saying why."),
    ):
        p = add(name, fn, help_)
        p.add_argument("run")
        p.add_argument("--store", default=default_store, help=f"default: {default_store}")
        p.add_argument("--namespace", "-n", type=namespace, default="default", help="default: default")
        p.add_argument("--pipeline", help="the run's pipeline (when two pipelines have a run of that name)")
        p.add_argument("--as", dest="as_", metavar="NAME", help="who decides (default: your user name)")
        if name == "reject":
            p.add_argument("--reason", required=True, help="why (recorded with the run)")
