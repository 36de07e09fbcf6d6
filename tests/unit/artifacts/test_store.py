"""The local store and the S3 store (against a real S3-protocol server) pass the same tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.artifacts import layout
from conveyor.artifacts.layout import Champion, StageResult
from conveyor.artifacts.store import LocalStore, S3Store, Store, StoreError, open_store, sha256_file


def test_write_read_verify(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 1000)
    ref = store.write_file("ns/p/r/s/a.bin", src, "application/octet-stream")
    assert ref.uri == store.uri("ns/p/r/s/a.bin")
    assert ref.sha256 == sha256_file(src) and ref.bytes == 1000
    assert store.read_bytes("ns/p/r/s/a.bin") == b"x" * 1000
    assert store.exists("ns/p/r/s/a.bin") and not store.exists("ns/p/r/s/b.bin")
    assert store.verify(ref)
    assert store.local_path("ns/p/r/s/a.bin", tmp_path / "dl").read_bytes() == b"x" * 1000
    assert store.key(ref.uri) == "ns/p/r/s/a.bin"


def test_verify_detects_a_changed_object(store: Store) -> None:
    ref = store.write_bytes("k/a.txt", b"one", "text/plain")
    store.write_bytes("k/a.txt", b"two", "text/plain")
    assert not store.verify(ref)


def test_missing_object_is_a_clear_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        store.read_bytes("nope/x")
    with pytest.raises(StoreError, match="does not exist"):
        store.local_path("nope/x", tmp_path)


def test_list_is_sorted_and_scoped(store: Store) -> None:
    for key in ("b/2", "a/1", "b/1", "c"):
        store.write_bytes(key, b".", "text/plain")
    assert store.list("b/") == ["b/1", "b/2"]
    assert store.list("") == ["a/1", "b/1", "b/2", "c"]


def test_outputs_json_commits_a_stage(store: Store) -> None:
    prefix = layout.stage_prefix("ns", "p", "r", "s")
    assert layout.read_result(store, prefix) is None
    ref = store.write_bytes(f"{prefix}/data.parquet", b"data", "application/vnd.apache.parquet")
    assert layout.read_result(store, prefix) is None  # written, not committed
    layout.commit_result(store, prefix, StageResult(outputs={"data": ref}, metrics={"rows": 3}))
    result = layout.read_result(store, prefix)
    assert result is not None and result.outputs["data"] == ref and result.metrics == {"rows": 3}
    assert store.exists(f"{prefix}/metrics.json")


def test_cache_hit_only_while_outputs_match(store: Store) -> None:
    ref = store.write_bytes("ns/p/r/s/m.bin", b"model", "application/x-skops")
    layout.cache_record(store, "k1", StageResult(outputs={"model": ref}))
    hit = layout.cache_lookup(store, "k1")
    assert hit is not None and hit.cache_key == "k1"
    assert layout.cache_lookup(store, "k2") is None
    store.write_bytes("ns/p/r/s/m.bin", b"tampered", "application/x-skops")
    assert layout.cache_lookup(store, "k1") is None


def test_champion_roundtrip(store: Store) -> None:
    ref = store.write_bytes("ns/p/r/train/model.skops", b"m", "application/x-skops")
    assert layout.read_champion(store, "ns", "p") is None
    champ = Champion(run="r", model=ref, metrics={"accuracy": 0.97}, promoted_at=datetime.now(UTC))
    layout.write_champion(store, "ns", "p", champ)
    assert layout.read_champion(store, "ns", "p") == champ


def test_local_keys_cannot_escape(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    with pytest.raises(StoreError, match="escapes"):
        store.write_bytes("../evil", b"x", "text/plain")


def test_s3_large_file_goes_multipart(bucket: str, tmp_path: Path) -> None:
    store = S3Store(bucket, "big")
    src = tmp_path / "big.bin"
    src.write_bytes(b"\0" * (17 << 20))  # over the 16 MiB multipart threshold
    ref = store.write_file("x/big.bin", src, "application/octet-stream")
    head = store.client.head_object(Bucket=bucket, Key="big/x/big.bin")
    assert "-" in head["ETag"]  # a multipart upload's ETag has a part count
    assert store.verify(ref)


def test_open_store_by_uri(tmp_path: Path, s3_env: str) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(tmp_path.as_uri()), LocalStore)
    s3 = open_store("s3://bucket/some/prefix")
    assert isinstance(s3, S3Store) and s3.root == "s3://bucket/some/prefix"
    with pytest.raises(StoreError, match="unsupported store"):
        open_store("ftp://x")
