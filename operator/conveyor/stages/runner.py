"""Run one stage from its invocation: the body of `conveyor stage` and of a forked child.

A stage either commits (all outputs written, then `outputs.json`) or fails with a message
written to the termination log, which becomes the stage's message in the run's status.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from conveyor.artifacts.layout import StageResult, commit_result
from conveyor.contract import INVOCATION_ENV, TERMINATION_LOG_ENV, TERMINATION_LOG_PATH
from conveyor.engine.invocation import StageInvocation
from conveyor.stages.context import StageContext, StageError

BUILTINS = ("ingest", "validate", "transform", "train", "evaluate", "predict")
MAX_MESSAGE = 4000  # Kubernetes keeps 4096 bytes of a termination message


def builtin(name: str) -> Callable[[StageContext], None]:
    if name not in BUILTINS:
        raise StageError(f"unknown built-in stage {name!r}; use one of {', '.join(BUILTINS)}")
    module = importlib.import_module(f"conveyor.stages.{name}")
    fn: Callable[[StageContext], None] = module.run
    return fn


def execute(inv: StageInvocation) -> StageResult:
    """Run a built-in stage and commit its outputs; raises on failure."""
    if inv.uses is None:
        raise StageError("a custom stage runs its own image; only built-ins run here")
    ctx = StageContext(inv)
    try:
        builtin(inv.uses)(ctx)
        commit_result(ctx.store, ctx.prefix, ctx.result)
        return ctx.result
    finally:
        ctx.close()


def termination_log() -> Path | None:
    path = os.environ.get(TERMINATION_LOG_ENV)
    if path:
        return Path(path)
    default = Path(TERMINATION_LOG_PATH)
    return default if default.parent.is_dir() and os.access(default.parent, os.W_OK) else None


def report_failure(message: str) -> None:
    print(message, file=sys.stderr)
    path = termination_log()
    if path is not None:
        with contextlib.suppress(OSError):
            path.write_text(message[-MAX_MESSAGE:])


def main(debug: bool = False) -> int:
    """`conveyor stage`: exit 0 when committed, 1 on a stage error, 2 on a bad invocation."""
    try:
        inv = StageInvocation.from_env(os.environ)
    except (KeyError, ValueError) as err:
        report_failure(f"invalid stage invocation: {err}")
        return 2
    try:
        result = execute(inv)
    except StageError as err:
        report_failure(str(err))
        return 1
    except Exception as err:  # an unexpected error: say what it was, keep the trace in the log
        traceback.print_exc()
        report_failure(f"{type(err).__name__}: {err}")
        return 1
    print(f"stage {inv.stage} committed {len(result.outputs)} output(s) to {inv.output_prefix}")
    return 0


def child_main(invocation_json: str, log_path: str, termlog_path: str, env: dict[str, str]) -> None:
    """Entry point of a stage forked from the warm fork server. The environment is the
    launcher's at launch time (the fork server's own dates from its start)."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ[INVOCATION_ENV] = invocation_json
    os.environ[TERMINATION_LOG_ENV] = termlog_path
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
