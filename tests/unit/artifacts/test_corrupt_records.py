"""A broken record of the store says which file and what to do, and breaks only what needs it:
a corrupt cache pointer is a miss, a corrupt run.json hides only its own run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.artifacts import champion, layout
from conveyor.artifacts.layout import CorruptRecord
from conveyor.artifacts.store import LocalStore


def _record(store: LocalStore, run: str) -> None:
    layout.write_run_record(
        store,
        layout.RunRecord.model_validate(
            {
                "run": run,
                "pipeline": "p",
                "namespace": "ns",
                "phase": "Succeeded",
                "startTime": datetime.now(UTC),
                "specDigest": "0" * 64,
                "params": {},
                "version": "test",
            }
        ),
    )


def test_a_corrupt_cache_pointer_is_a_miss(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes(layout.cache_pointer_key("k"), b'{"outputs": {', "application/json")
    assert layout.cache_lookup(store, "k") is None  # a JSONDecodeError naming no file before


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param(b"\x00\x01 not json", "is not valid JSON", id="not-json"),
        pytest.param(b'{"run": 7}', "is not a valid record", id="not-a-champion"),
    ],
)
def test_a_corrupt_champion_names_the_file_and_the_way_out(tmp_path: Path, content: bytes, says: str) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes(layout.champion_key("ns", "p"), content, "application/json")
    path = str(tmp_path / "ns" / "p" / "champion.json")
    with pytest.raises(CorruptRecord) as err:
        layout.read_champion(store, "ns", "p")
    assert path in str(err.value) and says in str(err.value) and "_versions/" in str(err.value)
    with pytest.raises(CorruptRecord, match=r"champion\.json is not a valid champion record"):
        champion.current(store, "ns", "p")


def test_one_corrupt_run_record_hides_only_itself(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LocalStore(tmp_path)
    _record(store, "good-1")
    _record(store, "good-2")
    store.write_bytes("ns/p/broken/run.json", b"{", "application/json")
    assert [r.run for r in layout.list_run_records(store)] == ["good-1", "good-2"]
    assert "broken/run.json" in caplog.text
    with pytest.raises(CorruptRecord, match=r"broken/run\.json is not valid JSON"):
        layout.read_run_record(store, "ns", "p", "broken")
