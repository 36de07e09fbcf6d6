"""The `conveyor` command: run | validate | crds | stage | render | serve | operator | runs | show |
models."""

# The local commands live here, the cluster and serving ones in `cli_cluster`; each command
# imports what it needs when it runs, so that `conveyor --help` stays fast.

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor import __version__
from conveyor.cli_approval import add_approval_commands
from conveyor.cli_cluster import add_cluster_commands
from conveyor.cli_errors import CliError
from conveyor.cli_output import add_json_alias, add_output_option, dump, names, namespace
from conveyor.cli_store import add_store_commands, open_named_store, record_data
from conveyor.contract import INVOCATION_ENV
from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.engine.validation import Problem

DEFAULT_STORE = ".conveyor"
EXIT_REJECTED = 3  # `conveyor run`: the run succeeded, its model did not pass its gate
# Errors about the user's input or environment, reported in one line.


def _params(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--param {item!r}: write it as NAME=VALUE")
        out[name] = value
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from conveyor.local.fastrun import fast_run

    answer = fast_run(args, DEFAULT_STORE)  # every stage cached: the run memo answers (local.memo)
    if answer is not None:
        return _report(args, answer.data, answer.summary)
    from conveyor.local.processes import ProcessStarter

    starter = ProcessStarter(args.launch)
    if args.no_cache:  # every stage will run: the fork server warms up while the CLI works
        starter.start_early(Path(args.file))
    from rich.console import Console

    from conveyor.engine.validation import InvalidResource
    from conveyor.local.executor import LocalRun
    from conveyor.local.memo import Request
    from conveyor.local.progress import watch
    from conveyor.local.remember import Remember, summary
    from conveyor.resources import load_run_request

    try:
        request = load_run_request(Path(args.file))
    except InvalidResource as err:
        raise CliError("invalid resource:\n" + "\n".join(f"  {p}" for p in err.problems)) from None
    pipeline, run = request.pipeline, request.run
    params = {**(run.spec.params if run else {}), **_params(args.param)}
    named = _pipeline_store(pipeline)
    store_uri = args.store or named or DEFAULT_STORE
    source = "--store" if args.store else "spec.artifacts.s3" if named else "the default store"
    if named and not args.store:
        _use_pipeline_s3(pipeline)
    store = open_named_store(store_uri, source)
    asked = Request(Path(args.file), args.param, args.namespace, args.store, DEFAULT_STORE)
    memo = Remember.begin(asked, store, args, from_file=run is None or run.spec.pipeline_ref is None)
    try:
        local = LocalRun(
            spec=pipeline.spec,
            pipeline=pipeline.metadata.name,
            store=memo.store if memo else store,
            params=params,
            namespace=args.namespace or pipeline.metadata.namespace or "default",
            use_cache=not args.no_cache,
            starter=starter,
            resume_from=args.resume_from
            or (run.spec.resume_from.run if run and run.spec.resume_from else None),
            timeout_seconds=run.spec.timeout_seconds if run else None,
            base_dir=Path(args.file).resolve().parent,
        )
    except InvalidResource as err:
        raise CliError("\n".join(str(p) for p in err.problems)) from None
    memo = memo and memo.watch(local)
    with watch(local, Console(stderr=True), show=not args.output):
        record = local.execute()
    text, console = summary(record, memo is not None) if not args.output else ("", None)
    if memo is not None:
        memo.end(record, console)
    return _report(args, record_data(record), text, local.stopped_by)


def _report(
    args: argparse.Namespace, data: dict[str, Any], summary: str | None, stopped_by: int | None = None
) -> int:
    """Print a finished run (`data`: its record as `-o json` prints it) and say its exit code:
    a cancelled run's is 128 + the signal that stopped it, as a shell reports a process that
    signal ended (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""
    if args.output in ("json", "yaml"):
        dump(data, args.output)
    elif args.output == "name":  # for scripts: RUN=$(conveyor run p.yaml -o name)
        print(data["run"])
    else:
        sys.stdout.write(summary or "")
    if data["phase"] != "Succeeded":
        return 128 + (stopped_by or signal.SIGINT) if data["phase"] == "Cancelled" else 1
    model = data.get("model")
    if model is not None and model.get("passed") is False and not args.allow_rejected:
        print(f"the model did not pass: {model['decision']} (exit {EXIT_REJECTED})", file=sys.stderr)
        return EXIT_REJECTED
    return 0


def _pipeline_store(pipeline: object) -> str | None:
    from conveyor.api.pipeline import Pipeline

    assert isinstance(pipeline, Pipeline)
    from conveyor.artifacts.uri import StoreURI

    s3 = pipeline.spec.artifacts.s3 if pipeline.spec.artifacts else None
    if s3 is None:
        return None
    return StoreURI.s3(s3.bucket, s3.prefix).uri


def _use_pipeline_s3(pipeline: object) -> None:
    """The pipeline's S3 endpoint (MinIO) and region, when it names them, for this run and its
    stages (they inherit this environment), over CONVEYOR_S3_ENDPOINT and AWS_DEFAULT_REGION:
    as the operator gives its stage pods the pipeline's endpoint over its own setting."""
    from conveyor.api.pipeline import Pipeline
    from conveyor.contract import S3_ENDPOINT_ENV, S3_REGION_ENV

    assert isinstance(pipeline, Pipeline)
    s3 = pipeline.spec.artifacts.s3 if pipeline.spec.artifacts else None
    for name, value in ((S3_ENDPOINT_ENV, s3 and s3.endpoint), (S3_REGION_ENV, s3 and s3.region)):
        if value:
            os.environ[name] = value


def cmd_validate(args: argparse.Namespace) -> int:
    from conveyor.resources import ResourceFileError, expand, validate_expanded

    try:
        files = expand([Path(f) for f in args.files])
        problems = validate_expanded(files)
    except ResourceFileError as err:
        raise CliError(str(err)) from None
    if args.output:
        return _print_validation(files, problems, args.output)
    for where, problem in problems:
        print(f"{where}: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"{len(files)} file(s) valid")
    return 0


def _print_validation(files: list[Path], problems: list[tuple[str, Problem]], fmt: str) -> int:
    """`validate -o name`: the resources found (kind.group/name), as kubectl prints them;
    `-o json|yaml`: those and the problems, one object each (exit 1 when there are any)."""
    from conveyor.resources import load_documents, ours

    found = []
    for doc in (d for f in files for d in load_documents(f) if ours(d.body)):
        kind, group = str(doc.body.get("kind", "")).lower(), str(doc.body.get("apiVersion", "")).split("/")[0]
        found.append(f"{kind}.{group}/{(doc.body.get('metadata') or {}).get('name', '')}")
    if fmt == "name":
        names(found)
        for where, problem in problems:
            print(f"{where}: {problem}", file=sys.stderr)
    else:
        listed = [{"file": w, "path": p.path, "message": p.message, "fix": p.fix} for w, p in problems]
        dump({"files": [str(f) for f in files], "resources": found, "problems": listed}, fmt)
    return 1 if problems else 0


def cmd_crds(args: argparse.Namespace) -> int:
    import yaml

    from conveyor.api.crd import all_crds

    crds = all_crds()
    fmt, folder = args.output, args.output_dir
    if fmt not in (None, "json", "yaml", "name"):  # `-o DIR`, its meaning before `-o FORMAT`
        print(f"warning: `crds -o {fmt}` is deprecated: write `crds --output-dir {fmt}`", file=sys.stderr)
        fmt, folder = None, fmt
    if fmt == "name":
        names(
            [f"customresourcedefinition.apiextensions.k8s.io/{c['metadata']['name']}" for c in crds.values()]
        )
    elif fmt == "json":
        dump({"apiVersion": "v1", "kind": "List", "items": list(crds.values())}, "json")
    elif fmt == "yaml":
        print(yaml.safe_dump_all(crds.values(), sort_keys=False, width=100), end="")
    if fmt is not None:
        return 0
    out = Path(folder or "crds")
    out.mkdir(parents=True, exist_ok=True)
    for name, crd in crds.items():
        text = "# Generated by `conveyor crds` from conveyor.api; do not edit.\n"
        text += yaml.safe_dump(crd, sort_keys=False, width=100)
        (out / name).write_text(text)
        print(out / name)
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from conveyor.stages.runner import main

    return main(debug=args.debug)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    parser = build_parser()
    kinds = {"file": shtab.FILE, "files": shtab.FILE, "store": shtab.DIRECTORY, "output_dir": shtab.DIRECTORY}
    for action in _all_actions(parser):
        if action.dest in kinds:
            action.complete = kinds[action.dest]  # type: ignore[attr-defined]
    print(shtab.complete(parser, shell=args.shell), end="")
    return 0


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _all_actions(child)
    return found


Command = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, Command, str], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__)
    parser.add_argument("--version", action="version", version=f"conveyor {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        # again on each command, so that `conveyor run --debug ...` works too; SUPPRESS, or
        # the command's default (False) would undo a `conveyor --debug run ...`
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
        )
        p.set_defaults(fn=fn)
        return p

    _add_local_commands(add)
    add_cluster_commands(add, DEFAULT_STORE)
    add_store_commands(add, DEFAULT_STORE)
    add_approval_commands(add, DEFAULT_STORE)
    return parser


def _add_local_commands(add: AddCommand) -> None:
    p = add("run", cmd_run, "Run a Pipeline (or a PipelineRun) on this machine.")
    p.add_argument("file", help="YAML with a Pipeline, or a PipelineRun whose Pipeline is beside it")
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument(
        "--store",
        help=f"folder or s3://bucket/prefix (default: the pipeline's artifacts.s3, else {DEFAULT_STORE}/)",
    )
    p.add_argument("--no-cache", action="store_true", help="run every stage, reuse nothing")
    p.add_argument("--resume-from", metavar="RUN", help="reuse the successful stages of RUN")
    p.add_argument(
        "--launch",
        choices=("fork", "exec"),
        default="fork",
        help="fork stages from a warm process (default) or exec each like a pod",
    )
    p.add_argument(
        "--namespace",
        "-n",
        type=namespace,
        help="the run's namespace in the store (default: the pipeline's, else default)",
    )
    add_output_option(p, ("json", "yaml", "name"), default="a live table, then a summary")
    add_json_alias(p)
    p.add_argument(
        "--allow-rejected",
        action="store_true",
        help=f"exit 0 when the run succeeds but its model fails its gate (default: {EXIT_REJECTED})",
    )

    p = add("validate", cmd_validate, "Check resource files offline, beyond the schema.")
    p.add_argument("files", nargs="+", help="YAML files or folders")
    add_output_option(p, ("json", "yaml", "name"), default="its problems, then a count")

    p = add("crds", cmd_crds, "Write the CRDs generated from the resource models.")
    p.add_argument("--output-dir", metavar="DIR", help="write one file per CRD here (default: crds)")
    p.add_argument(
        "-o",
        "--output",
        metavar="FORMAT",
        help="yaml, json or name: print them instead, e.g. `conveyor crds -o yaml | kubectl apply -f -` "
        "(-o DIR still means --output-dir DIR, deprecated)",
    )

    p = add(
        "completion",
        cmd_completion,
        "Print a shell completion script: `source <(conveyor completion bash)` in ~/.bashrc; "
        'for zsh, `conveyor completion zsh > "${fpath[1]}/_conveyor"`.',
    )
    p.add_argument("shell", choices=("bash", "zsh"))

    add("stage", cmd_stage, f"Run one stage from ${INVOCATION_ENV} (what a Job pod runs).")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # `conveyor ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE
    except CliError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except ConveyorError as err:  # raised on purpose: its message is for the user
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(
            f"error: {type(err).__name__}: {err}\n(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
