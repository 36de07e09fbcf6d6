"""What the full path notes for a run memo (`local.remember`): the digest of each record its run
reads, the artifacts it verifies, what it writes; and the summary's placeholder form."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.artifacts.layout import RunRecord
from conveyor.artifacts.localfiles import MISSING
from conveyor.artifacts.store import LocalStore, StoreError
from conveyor.local.memo import PLACEHOLDER, fill
from conveyor.local.remember import RecordingStore, summary


def test_reads_are_noted_by_the_digest_of_what_was_read(tmp_path: Path) -> None:
    inner = LocalStore(tmp_path)
    inner.write_bytes("cache/k.json", b"{}", "application/json")
    store = RecordingStore(inner)
    assert store.read_bytes("cache/k.json") == b"{}"
    with pytest.raises(StoreError):
        store.read_bytes("default/p/champion.json")
    assert store.reads == {
        "cache/k.json": hashlib.sha256(b"{}").hexdigest(),
        "default/p/champion.json": MISSING,
    }
    assert not store.unsure and not store.written


def test_a_record_that_changes_while_read_or_a_listing_makes_it_unsure(tmp_path: Path) -> None:
    inner = LocalStore(tmp_path)
    inner.write_bytes("a.json", b"1", "application/json")
    store = RecordingStore(inner)
    store.read_bytes("a.json")
    inner.write_bytes("a.json", b"2", "application/json")
    store.read_bytes("a.json")
    assert store.unsure
    listing = RecordingStore(inner)
    listing.list("")
    assert listing.unsure


def test_verified_artifacts_and_writes_are_noted(tmp_path: Path) -> None:
    store = RecordingStore(LocalStore(tmp_path))
    ref = store.write_bytes("default/p/r/train/model.skops", b"model", "application/x-skops")
    assert store.verify(ref)
    assert store.verified == {"default/p/r/train/model.skops": (5, ref.sha256)}
    assert store.written == {"default/p/r/train/model.skops"}
    assert store.write_if("default/p/champion.json", b"{}", "application/json", token=None)
    assert "default/p/champion.json" in store.written
    assert not store.verify(ref.model_copy(update={"sha256": "0" * 64})) and store.unsure


def test_the_summary_template_gives_the_summary_back() -> None:
    now = datetime.now(UTC)
    record = RunRecord(
        namespace="default",
        pipeline="p",
        run="p-20261130-212147-f60333c8",
        phase="Succeeded",
        spec_digest="0" * 64,
        params={},
        version="test",
        start_time=now,
        completion_time=now,
    )
    text, entry = summary(record, memoize=True)
    assert entry is not None and record.run in text
    assert entry["summary"].count(PLACEHOLDER) == len(record.run)
    assert fill(entry["summary"], record.run) == text
    assert summary(record, memoize=False) == (text, None)
