"""Store URIs and the store layout: one parser, one depth, tables of what each URI means."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.artifacts.layout import ArtifactPath, RunPath, model_version, run_prefix, stage_prefix
from conveyor.artifacts.store import LocalStore, S3Store, StoreError, open_store
from conveyor.artifacts.uri import StoreURI, split_s3
from conveyor.errors import ConveyorError


@pytest.mark.parametrize(
    ("text", "expected", "uri"),
    [
        pytest.param("s3://b", StoreURI("s3", "b", ""), "s3://b", id="bucket"),
        pytest.param("s3://b/", StoreURI("s3", "b", ""), "s3://b", id="bucket-slash"),
        pytest.param("s3://b/x/y", StoreURI("s3", "b", "x/y"), "s3://b/x/y", id="prefix"),
        pytest.param("s3://b//x/", StoreURI("s3", "b", "x"), "s3://b/x", id="prefix-slashes"),
        pytest.param("s3://b/a b", StoreURI("s3", "b", "a b"), "s3://b/a b", id="s3-keys-as-written"),
        pytest.param("file:///srv/st", StoreURI("file", "", "srv/st"), "file:///srv/st", id="file"),
        pytest.param("file:///srv/st/", StoreURI("file", "", "srv/st"), "file:///srv/st", id="file-slash"),
        pytest.param("file:///a%20b/c", StoreURI("file", "", "a b/c"), "file:///a%20b/c", id="file-encoded"),
        pytest.param("file:///", StoreURI("file", "", ""), "file:///", id="file-root"),
    ],
)
def test_parse_and_write_back(text: str, expected: StoreURI, uri: str) -> None:
    assert StoreURI.parse(text) == expected
    assert expected.uri == uri
    assert StoreURI.parse(expected.uri) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param("ftp://x", "unsupported store", id="scheme"),
        pytest.param("s3://", "bad bucket", id="no-bucket"),
        pytest.param("s3:///x", "bad bucket", id="empty-bucket"),
    ],
)
def test_parse_refuses(text: str, match: str) -> None:
    with pytest.raises(StoreError, match=match):
        StoreURI.parse(text)
    with pytest.raises(StoreError, match=match):
        StoreURI.parse_uri(text)


def test_parse_uri_takes_no_path() -> None:
    with pytest.raises(StoreError, match="is not a URI"):
        StoreURI.parse_uri("some/folder")


def test_a_folder_path_becomes_an_absolute_file_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert StoreURI.parse("st") == StoreURI.parse(str(tmp_path / "st")) == StoreURI.folder(tmp_path / "st")
    assert StoreURI.parse("st").uri == (tmp_path / "st").resolve().as_uri()


@pytest.mark.parametrize(
    ("bucket", "prefix", "uri"),
    [
        pytest.param("b", "", "s3://b", id="no-prefix"),
        pytest.param("b", "x", "s3://b/x", id="prefix"),
        pytest.param("b", "/x/", "s3://b/x", id="slashes-trimmed"),
        pytest.param("b", "x/y/", "s3://b/x/y", id="nested"),
    ],
)
def test_s3_uri_from_bucket_and_prefix(bucket: str, prefix: str, uri: str) -> None:
    assert StoreURI.s3(bucket, prefix).uri == uri
    assert S3Store(bucket, prefix, client=object()).root == uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("s3://b/x/", ("b", "x"), id="s3"),
        pytest.param("s3://", ("", ""), id="unchecked-bucket"),
        pytest.param("file:///x", None, id="file"),
        pytest.param("x/s3://y", None, id="not-at-start"),
        pytest.param("bucket/x", None, id="no-scheme"),
    ],
)
def test_split_s3(text: str, expected: tuple[str, str] | None) -> None:
    assert split_s3(text) == expected


@pytest.mark.parametrize(
    ("root", "key", "uri"),
    [
        pytest.param("s3://b", "ns/p/r/s/m", "s3://b/ns/p/r/s/m", id="s3-bucket"),
        pytest.param("s3://b/x", "/ns/p/", "s3://b/x/ns/p", id="s3-prefix"),
        pytest.param("file:///a%20b", "k/f.json", "file:///a%20b/k/f.json", id="file"),
        pytest.param("s3://b/x", "", "s3://b/x", id="empty-key"),
    ],
)
def test_join_and_key(root: str, key: str, uri: str) -> None:
    location = StoreURI.parse(root)
    assert location.join(key).uri == uri
    if key.strip("/"):
        assert location.key(uri) == key.strip("/")


@pytest.mark.parametrize(
    ("root", "uri"),
    [
        pytest.param("s3://b/x", "s3://b/xy/k", id="sibling-prefix"),
        pytest.param("s3://b/x", "s3://c/x/k", id="other-bucket"),
        pytest.param("s3://b/x", "file:///x/k", id="other-scheme"),
        pytest.param("s3://b/x", "s3://b/x", id="the-root-itself"),
        pytest.param("file:///st", "/st/k", id="a-path-is-not-a-uri"),
        pytest.param("s3://b/x", "ftp://b/x/k", id="unsupported"),
    ],
)
def test_key_outside_the_store(root: str, uri: str) -> None:
    with pytest.raises(StoreError, match=r"not inside|unsupported|not a URI"):
        StoreURI.parse(root).key(uri)


def test_parent() -> None:
    assert StoreURI.parse("s3://b/x/y/z").parent(2) == StoreURI("s3", "b", "x")
    assert StoreURI.parse("s3://b/x").parent() == StoreURI("s3", "b", "")
    with pytest.raises(StoreError, match="fewer than 2"):
        StoreURI.parse("s3://b/x").parent(2)


def test_a_folder_with_a_space_reopens_as_itself(tmp_path: Path) -> None:
    """A local store's root URI is percent-encoded; opening it again must find the same folder
    (a stage opens its store from the invocation's root URI)."""
    store = LocalStore(tmp_path / "a b")
    ref = store.write_bytes("ns/p/r/s/x.txt", b"x", "text/plain")
    again = open_store(store.root)
    assert isinstance(again, LocalStore) and again.path == store.path
    assert again.key(ref.uri) == "ns/p/r/s/x.txt" and again.verify(ref)


@pytest.mark.parametrize(
    ("uri", "root", "run", "stage", "name"),
    [
        pytest.param(
            "s3://b/ns/p/r/s/m.skops", "s3://b", RunPath("ns", "p", "r"), "s", "m.skops", id="s3-bucket"
        ),
        pytest.param(
            "s3://b/x/y/ns/p/r/s/m", "s3://b/x/y", RunPath("ns", "p", "r"), "s", "m", id="s3-prefix"
        ),
        pytest.param("file:///st/ns/p/r/s/m", "file:///st", RunPath("ns", "p", "r"), "s", "m", id="file"),
    ],
)
def test_artifact_path_from_uri(uri: str, root: str, run: RunPath, stage: str, name: str) -> None:
    where = ArtifactPath.from_uri(uri)
    assert (where.root.uri, where.run, where.stage, where.name) == (root, run, stage, name)
    assert where.uri == uri
    assert where.key == f"{stage_prefix(run.namespace, run.pipeline, run.run, stage)}/{name}"
    assert RunPath.from_uri(uri) == run


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("s3://b/p/r/s/m", id="s3-too-short"),
        pytest.param("file:///ns/p/r/s/m", id="file-root-is-slash"),
        pytest.param("s3://b", id="bucket"),
    ],
)
def test_artifact_path_refuses_what_is_not_in_a_run(uri: str) -> None:
    with pytest.raises(StoreError, match="not a run's artifact"):
        ArtifactPath.from_uri(uri)


def test_artifact_path_of_a_local_path(tmp_path: Path) -> None:
    path = tmp_path / "st" / "ns" / "p" / "r" / "s" / "m.skops"
    where = ArtifactPath.locate(StoreURI.parse(str(path)))
    assert where.root == StoreURI.folder(tmp_path / "st") and where.run == RunPath("ns", "p", "r")
    with pytest.raises(StoreError, match="is not a URI"):
        ArtifactPath.from_uri(str(path))  # a path means nothing without a working directory


@pytest.mark.parametrize(
    ("uri", "version"),
    [
        pytest.param("s3://b/conveyor/ml/p/run-7/train/model.skops", "run-7", id="prefixed-store"),
        pytest.param("s3://b/ml/p/run-7/train/model.skops", "run-7", id="bucket-store"),
        pytest.param("s3://b/ml/p/run-7/train/model.skops/", "run-7", id="trailing-slash"),
        pytest.param("file:///st/ml/p/r1/train/model.skops", "r1", id="file"),
        pytest.param("s3://b/m.skops", "model", id="not-in-a-run"),
        pytest.param("ftp://b/ml/p/r/s/m", "model", id="unsupported"),
        pytest.param("a/b/c/d/e/f/model.skops", "model", id="a-path-is-no-uri"),
    ],
)
def test_model_version_is_the_run(uri: str, version: str) -> None:
    assert model_version(uri) == version


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("ns/p/r/run.json", RunPath("ns", "p", "r"), id="record"),
        pytest.param("cache/p/r/run.json", None, id="cache"),
        pytest.param("ns/p/r/s/run.json", None, id="too-deep"),
        pytest.param("ns/p/r/outputs.json", None, id="other-file"),
        pytest.param("ns/p/champion.json", None, id="champion"),
    ],
)
def test_run_path_from_record_key(key: str, expected: RunPath | None) -> None:
    assert RunPath.from_record_key(key) == expected


def test_run_path_keys_match_the_old_helpers() -> None:
    run = RunPath("ns", "p", "r")
    assert (run.prefix, run.stage("s"), run.record_key) == (
        run_prefix("ns", "p", "r"),
        stage_prefix("ns", "p", "r", "s"),
        "ns/p/r/run.json",
    )


def test_store_error_is_a_conveyor_error() -> None:
    assert issubclass(StoreError, ConveyorError) and issubclass(StoreError, RuntimeError)
