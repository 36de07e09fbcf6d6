"""Run memos: what a fully cached `conveyor run` answered, for the next identical request.

A run that ends Succeeded with every stage from the cache is answered again, as long as
nothing it depended on changed, with the same stage results, model and printed summary. Its
full path (pydantic models, the run core, Rich) costs ~0.75 s of imports and checks; a memo lets
`conveyor run` give the same answer from the standard library alone (`local.fastrun`).

A memo lives at `cache/runs/<request digest>.json` in a local store (`artifacts.keys`). The
request digest covers what `conveyor run` is asked: the file's bytes and folder, the --param
values, the namespace, the store (and whether --store named it), the Conveyor version. The
memo then names what the answer depended on beyond the request, each checked again before it
is reused (`local.remember` writes them, `local.fastrun` checks them):

- `code`, `environment`: Conveyor's own files and the installed distributions (the versions
  of the libraries in every cache key, and of those that print the answer);
- `sources`: each local ingest source, by the fact its stage's cache key holds (`source_fact`);
- `records`: every store record the run read outside its own folder (the cache pointers, the
  champion, learned expectations, a decision), by the digest of the bytes it read;
- `artifacts`: every artifact the run verified (`file_matches`, as the store verifies one);
- `consoles`: the summary as printed for one terminal set-up (`console_key`), the run's name
  left as a placeholder.

This module imports nothing heavier than `hashlib`: `conveyor run` imports it before it knows
whether the full path runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from conveyor import __version__

FORMAT = 1
PLACEHOLDER = "~"  # stands for each character of the run's name in a memo's summary
# What Rich reads from the environment to decide a console's size, colours and terminal-ness.
CONSOLE_ENV = (
    "COLUMNS",
    "LINES",
    "NO_COLOR",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "TERM",
    "COLORTERM",
    "JUPYTER_COLUMNS",
    "JUPYTER_LINES",
    "DATABRICKS_RUNTIME_VERSION",
)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class Request:
    """What `conveyor run` is asked, as far as the answer depends on it; `digest` names it."""

    def __init__(
        self, file: Path, params: list[str], namespace: str | None, store: str | None, default_store: str
    ) -> None:
        self.file = file
        self.folder = file.resolve().parent
        self.root = Path(store or default_store).resolve()
        self.store_uri = self.root.as_uri()
        content = hashlib.sha256(file.read_bytes()).hexdigest()
        self.digest = _digest(
            {
                "format": FORMAT,
                "conveyor": __version__,
                "file": content,
                "folder": str(self.folder),
                "params": list(params),
                "namespace": namespace,
                "store": self.store_uri,
                "store_named": store is not None,
            }
        )


def code_fingerprint() -> str:
    """Conveyor's own modules (path, size, modification time): an edited install, whose
    version stays the same, answers afresh."""
    package = Path(__file__).resolve().parent.parent
    seen = []
    for folder, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                stat = os.stat(path)
                seen.append((os.path.relpath(path, package), stat.st_size, stat.st_mtime_ns))
    return _digest(seen)


def environment_fingerprint() -> str:
    """The interpreter and the installed distributions (`<name>-<version>.dist-info`): the
    library versions in every cache key (`runs.context.runtime_version`) and those of the
    libraries that write and print the answer (pydantic, Rich, PyYAML)."""
    found: list[str] = []
    for entry in sys.path:
        if os.path.basename(entry) in ("site-packages", "dist-packages") and os.path.isdir(entry):
            found += (n for n in os.listdir(entry) if n.endswith((".dist-info", ".egg-info")))
    return _digest([sys.version, sys.executable, sorted(found)])


def console_key() -> str:
    """What decides how Rich prints to this process's stdout and stderr: the environment it
    reads, whether each stream is a terminal, the terminal's size and the encodings."""
    size = None
    for fd in (0, 1, 2):  # as Rich looks for a terminal's size
        try:
            size = tuple(os.get_terminal_size(fd))
            break
        except (AttributeError, ValueError, OSError):
            pass
    streams = []
    for stream in (sys.stdout, sys.stderr):
        try:
            tty = bool(stream.isatty())
        except (AttributeError, ValueError):
            tty = False
        streams.append((tty, (getattr(stream, "encoding", None) or "utf-8").lower()))
    env = {name: os.environ.get(name) for name in CONSOLE_ENV}
    return _digest([env, size, streams, sys.platform])


def start_line(run: str, store: str) -> str:
    """The first line a run prints on a stderr that is no terminal (`progress.watch`)."""
    return f"run {run}: store {store}"


def lookup_line(stages: int, use_cache: bool = True) -> str:
    """What a run does before its stages run (`executor.LocalRun`)."""
    look = "looking up the cache for" if use_cache else "reading the store for"
    return f"{look} {stages} stage(s)"


def json_time(moment: datetime) -> str:
    """A UTC time as the records' JSON writes it (pydantic's form: `...T12:00:00.5Z`)."""
    return moment.isoformat().replace("+00:00", "Z")


def fill(template: str, name: str) -> str | None:
    """The summary `template` with its placeholders replaced, in order, by the characters of
    `name`; None when their number is not the name's length."""
    parts = template.split(PLACEHOLDER)
    if len(parts) != len(name) + 1:
        return None
    return parts[0] + "".join(c + rest for c, rest in zip(name, parts[1:], strict=True))
