"""What a local folder store does to its files, without the store: digests, verification, the
lock that makes a create-only write safe, an atomic write, and the JSON form of records.

`store.LocalStore` and `runs.context` use these, and so does `conveyor run`'s answer from a run
memo (`local.fastrun`), which must decide exactly as they do without importing pydantic:
hence this module imports nothing of Conveyor and nothing heavier than `hashlib`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
MISSING = "missing"  # the fact of a local source that is not a file


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_fact(path: Path) -> str:
    """What a local ingest source adds to its stage's cache key: its content's digest, or
    `missing` when it is not a file."""
    return sha256_file(path) if path.is_file() else MISSING


def file_matches(path: Path, size: int, sha256: str) -> bool:
    """An artifact still as recorded: a file of that size and digest."""
    return path.is_file() and path.stat().st_size == size and sha256_file(path) == sha256


def json_bytes(value: Any) -> bytes:
    """The bytes of a JSON record in a store (run records, results, cache pointers)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode()


@contextmanager
def locked(target: Path) -> Iterator[None]:
    """An exclusive lock on a hidden file beside `target`, held while the caller compares and
    writes: writers on one machine (or one shared file system) take turns; readers never wait."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    with lock.open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held.fileno(), fcntl.LOCK_UN)


def write_atomic(target: Path, data: bytes) -> None:
    """`data` at `target`, whole or not at all: written to a hidden file beside it (mode 0600,
    as `tempfile.mkstemp` makes it), synced, then renamed over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_only(target: Path, data: bytes) -> bool:
    """Write `target` only if it does not exist (under `locked`); False when it did."""
    with locked(target):
        if target.exists():
            return False
        write_atomic(target, data)
        return True


def inside(root: Path, key: str) -> Path | None:
    """The file of `key` below `root` (a resolved folder), or None when it would escape it."""
    target = (root / key).resolve()
    return target if root in target.parents else None
