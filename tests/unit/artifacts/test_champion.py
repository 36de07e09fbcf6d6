"""Promotion's compare-and-swap and the versions it leaves, on a local folder and on S3 (moto)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor.artifacts import champion as champions
from conveyor.artifacts.layout import Champion, champion_key, write_champion
from conveyor.artifacts.store import LocalStore, S3Store, Store
from conveyor.engine.invocation import ArtifactRef


@pytest.fixture
def atomic_moto_puts() -> Iterator[None]:
    """Real S3 checks a conditional PUT's If-Match / If-None-Match and writes the object as one
    step; moto 5.2.5 checks, then writes, with no lock between (moto/s3/responses.py,
    put_object), so two racing conditional PUTs can both succeed there. Serialising moto's
    put_object gives the fake the guarantee the real service gives."""
    from moto.s3.responses import S3Response

    original = S3Response.put_object
    lock = threading.Lock()

    def put_object(self: S3Response) -> Any:
        with lock:
            return original(self)

    S3Response.put_object = put_object  # type: ignore[method-assign]
    yield
    S3Response.put_object = original  # type: ignore[method-assign]


@pytest.fixture(params=["local", "s3"])
def cas_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    request.getfixturevalue("atomic_moto_puts")
    return S3Store(request.getfixturevalue("bucket"), "artifacts")


def model(run: str) -> ArtifactRef:
    return ArtifactRef(uri=f"file:///s/ns/p/{run}/train/model.skops", sha256=run * 4, bytes=1)


def candidate(run: str, version: int, accuracy: float = 0.9) -> Champion:
    return Champion(
        run=run,
        model=model(run),
        metrics={"accuracy": accuracy},
        promoted_at=datetime.now(UTC),
        version=version,
    )


def test_write_if_creates_only_when_absent_and_swaps_only_on_the_token_read(cas_store: Store) -> None:
    assert cas_store.read_versioned("ns/p/x.json") is None
    assert cas_store.write_if("ns/p/x.json", b"1", "application/json", None)
    assert not cas_store.write_if("ns/p/x.json", b"2", "application/json", None)  # exists now
    read = cas_store.read_versioned("ns/p/x.json")
    assert read is not None and read[0] == b"1"
    assert cas_store.write_if("ns/p/x.json", b"2", "application/json", read[1])
    assert not cas_store.write_if("ns/p/x.json", b"3", "application/json", read[1])  # stale token
    assert cas_store.read_bytes("ns/p/x.json") == b"2"
    assert cas_store.list("ns/p") == ["ns/p/x.json"]  # no lock file or temporary is listed


def test_concurrent_increments_lose_no_update(cas_store: Store) -> None:
    """Twenty threads each add one to a counter by read → write_if → retry: all twenty land."""
    key, start = "ns/p/counter", threading.Barrier(20)

    def increment(_: int) -> int:
        start.wait()
        tries = 0
        while True:
            tries += 1
            read = cas_store.read_versioned(key)
            value, token = (int(read[0]), read[1]) if read else (0, None)
            if cas_store.write_if(key, str(value + 1).encode(), "text/plain", token):
                return tries

    with ThreadPoolExecutor(20) as pool:
        tries = list(pool.map(increment, range(20)))
    assert cas_store.read_bytes(key) == b"20"
    assert max(tries) > 1  # the threads did collide: the test exercised the conflict path


def test_promote_numbers_versions_and_refuses_a_stale_champion(cas_store: Store) -> None:
    empty = champions.current(cas_store, "ns", "p")
    assert empty == champions.ChampionState(None, None) and empty.next_version == 1
    assert champions.promote(cas_store, "ns", "p", empty, candidate("a", 1))
    # another promoter decided against the same (empty) state: it must lose
    assert not champions.promote(cas_store, "ns", "p", empty, candidate("b", 1))
    first = champions.current(cas_store, "ns", "p")
    assert first.champion is not None and first.champion.run == "a" and first.next_version == 2
    with pytest.raises(ValueError, match="does not follow"):
        champions.promote(cas_store, "ns", "p", first, candidate("b", 5))
    assert champions.promote(cas_store, "ns", "p", first, candidate("b", 2, 0.95))
    assert not champions.promote(cas_store, "ns", "p", first, candidate("c", 2))
    assert [(v.version, v.run) for v in champions.list_versions(cas_store, "ns", "p")] == [(1, "a"), (2, "b")]
    one = champions.read_version(cas_store, "ns", "p", 1)
    assert one is not None and one.run == "a" and one.metrics == {"accuracy": 0.9}
    assert champions.read_version(cas_store, "ns", "p", 3) is None


def test_a_version_lost_between_swap_and_record_is_listed_and_repaired(tmp_path: Path) -> None:
    """A promoter that died after its swap left champion.json at v1 and no _versions/ entry."""
    store = LocalStore(tmp_path)
    write_champion(store, "ns", "p", candidate("a", 1))
    assert [v.run for v in champions.list_versions(store, "ns", "p")] == ["a"]
    assert champions.read_version(store, "ns", "p", 1) is not None
    state = champions.current(store, "ns", "p")
    assert champions.promote(store, "ns", "p", state, candidate("b", 2))
    assert store.exists(champions.version_key("ns", "p", 1)) and store.exists(
        champions.version_key("ns", "p", 2)
    )


def test_a_champion_written_before_versions_is_version_one(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes(
        champion_key("ns", "p"),
        b'{"run": "old", "model": {"uri": "file:///m", "sha256": "0", "bytes": 1}, '
        b'"promoted_at": "2024-01-01T00:00:00Z"}',
        "application/json",
    )
    state = champions.current(store, "ns", "p")
    assert state.champion is not None and state.champion.version == 1 and state.next_version == 2
