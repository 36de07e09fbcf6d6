"""A local store's file primitives, shared by the store and the fast path of `conveyor run`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conveyor.artifacts.localfiles import (
    MISSING,
    create_only,
    file_matches,
    inside,
    source_fact,
    write_atomic,
)
from conveyor.artifacts.store import LocalStore


def test_a_create_only_write_happens_once(tmp_path: Path) -> None:
    target = tmp_path / "a" / ".claim"
    assert create_only(target, b"x")
    assert not create_only(target, b"y")
    assert target.read_bytes() == b"x"


def test_it_locks_as_the_local_store_does(tmp_path: Path) -> None:
    create_only(tmp_path / "a" / "k.json", b"{}")
    LocalStore(tmp_path).write_if("b/k.json", b"{}", "application/json", token=None)
    assert (tmp_path / "a" / ".k.json.lock").is_file() and (tmp_path / "b" / ".k.json.lock").is_file()


def test_an_atomic_write_leaves_the_file_private_and_nothing_else(tmp_path: Path) -> None:
    write_atomic(tmp_path / "d" / "f.json", b"data")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.json"]
    assert (tmp_path / "d" / "f.json").stat().st_mode & 0o777 == 0o600


def test_facts_and_matches(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    assert source_fact(path) == MISSING
    path.write_bytes(b"a,b\n1,2\n")
    digest = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert source_fact(path) == digest
    assert file_matches(path, 8, digest)
    assert not file_matches(path, 9, digest) and not file_matches(path, 8, "0" * 64)
    assert not file_matches(tmp_path / "gone", 8, digest)


def test_keys_stay_inside_the_store(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    assert inside(root, "a/b.json") == root / "a" / "b.json"
    assert inside(root, "../x") is None
    assert inside(root, "") is None
