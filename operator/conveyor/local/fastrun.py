"""`conveyor run` answered from a run memo (`local.memo`), without pydantic, Rich or asyncio.

`fast_run` finds the memo of the request, checks everything it names again (Conveyor's code
and the installed libraries, the local sources, every store record the memo's run read, every
artifact it verified, the terminal set-up of the summary), then does what the full path does
for a run whose every stage is a cache hit: it claims a fresh run name, commits each stage's
result (the cache pointer's, marked as a cache hit) to the run's folder, writes the run record
and returns what to print. On any doubt it returns None before writing anything, and the full
path runs (and writes the memo again when it is reusable).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from conveyor import __version__
from conveyor.artifacts import keys
from conveyor.artifacts.localfiles import (
    MISSING,
    create_only,
    file_matches,
    inside,
    json_bytes,
    sha256_file,
    source_fact,
    write_atomic,
)
from conveyor.local import memo as memos
from conveyor.local.names import CLAIM_ATTEMPTS, new_run_name

# The options of `conveyor run` this path knows; another (a new flag) sends the run the full way.
KNOWN = frozenset(
    {"command", "fn", "debug", "file", "param", "store", "no_cache", "resume_from", "launch"}
    | {"namespace", "output", "allow_rejected"}
)


class Answer(NamedTuple):
    data: dict[str, Any]  # the run record, as `-o json` prints it
    summary: str | None  # the summary, as printed when there is no -o


def fast_run(args: Any, default_store: str) -> Answer | None:
    """The run `args` asks for, answered from its memo; None when the full path must run."""
    if not _plain(args):
        return None
    try:
        request = memos.Request(Path(args.file), args.param, args.namespace, args.store, default_store)
        memo = _memo(request)
        if memo is None:
            return None
        console = None
        if not args.output:
            console = memo["consoles"].get(memos.console_key())
            # printed for another terminal set-up (or not for this name's length): the full path prints
            if console is None or memos.fill(console["summary"], memo["record"]["run"]) is None:
                return None
        template = _template(memo)
        if template is None or not _still_valid(memo, request.root):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no memo, or not one this Conveyor wrote: the full path says what is wrong
    return _answer(memo, request, template, console)


def _plain(args: Any) -> bool:
    """A request this path answers: the cache used, nothing resumed, a local store, every
    --param well formed (else the full path says what is wrong)."""
    return (
        set(vars(args)) <= KNOWN
        and not args.no_cache
        and not args.resume_from
        and (args.store is None or "://" not in args.store)
        and all("=" in p and not p.startswith("=") for p in args.param)
    )


def _memo(request: memos.Request) -> dict[str, Any] | None:
    path = inside(request.root, keys.memo_key(request.digest))
    if path is None or not path.is_file():
        return None
    memo = json.loads(path.read_bytes())
    ours = (memo["format"], memo["request"], memo["conveyor"]) == (memos.FORMAT, request.digest, __version__)
    return memo if ours and isinstance(memo, dict) else None


def _template(memo: dict[str, Any]) -> dict[str, Any] | None:
    """The memo's run record with its name and times blanked; None if its old name shows
    anywhere else (then a new name could not simply replace it)."""
    record: dict[str, Any] = memo["record"]
    old = record["run"]
    record.update(run="", startTime=None, completionTime=None)
    for stage in record["stages"]:
        stage.update(startTime=None, finishTime=None)
    texts = [json.dumps(record), *(c["metrics"] + c["outputs"] for c in memo["commits"].values())]
    return None if not old or any(old in t for t in texts) else record


def _still_valid(memo: dict[str, Any], root: Path) -> bool:
    """Everything the memo's answer depended on is as it was."""
    if (memo["code"], memo["environment"]) != (memos.code_fingerprint(), memos.environment_fingerprint()):
        return False
    if any(source_fact(Path(path)) != fact for path, fact in memo["sources"].items()):
        return False
    for key, digest in memo["records"].items():
        path = inside(root, key)
        if path is None or (sha256_file(path) if path.is_file() else MISSING) != digest:
            return False
    for key, size, sha256 in memo["artifacts"]:
        path = inside(root, key)
        if path is None or not file_matches(path, size, sha256):
            return False
    return True


def _answer(
    memo: dict[str, Any], request: memos.Request, record: dict[str, Any], console: dict[str, Any] | None
) -> Answer | None:
    """Claim a name, commit the stages' results, write the run record: as the full path does."""
    namespace, pipeline = record["namespace"], record["pipeline"]
    name = _claim(request.root, namespace, pipeline)
    if name is None:
        return None
    summary = None if console is None else memos.fill(console["summary"], name)
    if console is not None and not console["live"]:
        print(memos.start_line(name, request.store_uri), file=sys.stderr)
        print(memos.lookup_line(len(record["stages"])), file=sys.stderr, flush=True)
    start = memos.json_time(datetime.now(UTC))
    record.update(run=name, startTime=start, completionTime=start)
    stages = {stage["name"]: stage for stage in record["stages"]}
    for stage, commit in memo["commits"].items():
        prefix = request.root / keys.stage_prefix(namespace, pipeline, name, stage)
        write_atomic(prefix / keys.METRICS, commit["metrics"].encode())
        write_atomic(prefix / keys.OUTPUTS, commit["outputs"].encode())  # last: it commits
        now = memos.json_time(datetime.now(UTC))
        stages[stage].update(startTime=now, finishTime=now)
    write_atomic(request.root / keys.record_key(namespace, pipeline, name), json_bytes(record))
    return Answer(record, summary)


def _claim(root: Path, namespace: str, pipeline: str) -> str | None:
    """A fresh run name, taken in the store as `executor.claim_name` takes one."""
    for _ in range(CLAIM_ATTEMPTS):
        name = new_run_name(pipeline)
        target = inside(root, keys.claim_key(namespace, pipeline, name))
        if target is None:
            return None
        if create_only(target, b""):
            return name
    return None
