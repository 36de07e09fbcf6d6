"""Artifact stores: a local folder and S3 (or MinIO), behind one small interface.

Keys are '/'-separated paths relative to the store's root; every artifact is addressed by a
URI (`file:///…` or `s3://bucket/…`, built and parsed by `uri.StoreURI`). Writes are atomic
per object: a local file is written to a temporary name and renamed, an S3 object appears
whole or not at all.

A pipeline-level record that several runs may update at once (the champion) is read with a
token and written back only if it still has that token (`read_versioned`, `write_if`): a
compare-and-swap, by a lock and an atomic rename on a local folder and by a conditional PUT
(`If-Match` on the ETag, `If-None-Match: *` to create) on S3.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from conveyor.artifacts.localfiles import CHUNK, file_matches, locked
from conveyor.artifacts.localfiles import sha256_file as sha256_file
from conveyor.artifacts.uri import FILE, S3, StoreURI
from conveyor.artifacts.uri import StoreError as StoreError
from conveyor.contract import S3_ENDPOINT_ENV, S3_REGION_ENV
from conveyor.engine.invocation import ArtifactRef

# What S3 answers a conditional write that lost: the precondition failed, a concurrent
# conditional write is in progress, or the object it was to replace is gone.
LOST_RACE = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"})


class Store(ABC):
    location: StoreURI

    @property
    def root(self) -> str:
        """The store's root URI."""
        return self.location.uri

    def uri(self, key: str) -> str:
        return self.location.join(key).uri

    def key(self, uri: str) -> str:
        return self.location.key(uri)

    @abstractmethod
    def write_file(self, key: str, path: Path, media_type: str) -> ArtifactRef: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under a prefix, sorted."""

    @abstractmethod
    def local_path(self, key: str, workdir: Path) -> Path:
        """A local file with the object's content (the file itself for a local store)."""

    @abstractmethod
    def verify(self, ref: ArtifactRef) -> bool:
        """True when the artifact exists and its recorded digest still matches."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's content and a token that changes whenever it is rewritten; None if
        there is no such object."""

    @abstractmethod
    def write_if(self, key: str, data: bytes, media_type: str, token: str | None) -> bool:
        """Write the object only if it is still as read: its token is `token` (from
        `read_versioned`), or, for None, it does not exist. False, and nothing written, when
        another writer got there first (read again, decide again, retry)."""

    def write_bytes(self, key: str, data: bytes, media_type: str) -> ArtifactRef:
        with tempfile.NamedTemporaryFile(delete=False) as tmp:
            tmp.write(data)
        try:
            return self.write_file(key, Path(tmp.name), media_type)
        finally:
            os.unlink(tmp.name)


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.path = root.resolve()
        self.location = StoreURI.folder(self.path)

    def _file(self, key: str) -> Path:
        target = (self.path / key).resolve()
        if self.path not in target.parents and target != self.path:
            raise StoreError(f"key {key!r} escapes the store")
        return target

    def write_file(self, key: str, path: Path, media_type: str) -> ArtifactRef:
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            digest = sha256_file(Path(tmp))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ArtifactRef(
            uri=self.uri(key), sha256=digest, bytes=target.stat().st_size, media_type=media_type
        )

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._file(key).read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, key: str, data: bytes, media_type: str, token: str | None) -> bool:
        """Under an exclusive lock on a hidden file beside the object (held by this process
        only while it compares and renames), so writers on one machine or one shared file
        system take turns; readers never wait, and see the old object or the new one."""
        with locked(self._file(key)):
            current = self.read_versioned(key)
            if (current[1] if current else None) != token:
                return False
            self.write_bytes(key, data, media_type)
            return True

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.uri(key)} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._file(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._file(prefix) if prefix else self.path
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.path).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def local_path(self, key: str, workdir: Path) -> Path:
        path = self._file(key)
        if not path.is_file():
            raise StoreError(f"{self.uri(key)} does not exist")
        return path

    def verify(self, ref: ArtifactRef) -> bool:
        try:
            path = self._file(self.key(ref.uri))
        except StoreError:
            return False
        return file_matches(path, ref.bytes, ref.sha256)


class S3Store(Store):
    """S3 or any S3-compatible store (MinIO). Credentials come from the environment
    (a Secret mounted with envFrom in a pod), never from the resource."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        endpoint: str | None = None,
        region: str | None = None,
    ) -> None:
        self.location = StoreURI.s3(bucket, prefix)
        self.bucket = bucket
        self.prefix = self.location.path
        self.client = client if client is not None else make_s3_client(endpoint, region)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def write_file(self, key: str, path: Path, media_type: str) -> ArtifactRef:
        from boto3.s3.transfer import TransferConfig

        digest = sha256_file(path)
        self.client.upload_file(
            str(path),
            self.bucket,
            self._object(key),
            ExtraArgs={"ContentType": media_type, "Metadata": {"sha256": digest}},
            Config=TransferConfig(multipart_threshold=16 * CHUNK, multipart_chunksize=16 * CHUNK),
        )
        return ArtifactRef(uri=self.uri(key), sha256=digest, bytes=path.stat().st_size, media_type=media_type)

    def read_bytes(self, key: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._object(key))
        except self.client.exceptions.NoSuchKey:
            raise StoreError(f"{self.uri(key)} does not exist") from None
        data: bytes = obj["Body"].read()
        return data

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._object(key))
        except self.client.exceptions.NoSuchKey:
            return None
        data: bytes = obj["Body"].read()
        return data, str(obj["ETag"])

    def write_if(self, key: str, data: bytes, media_type: str, token: str | None) -> bool:
        """One conditional PUT: S3 checks the condition and writes as one step."""
        from botocore.exceptions import ClientError

        condition = {"IfMatch": token} if token is not None else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._object(key),
                Body=data,
                ContentType=media_type,
                Metadata={"sha256": hashlib.sha256(data).hexdigest()},
                **condition,
            )
        except ClientError as err:
            # 412: the condition failed; 409: a concurrent conditional write won; 404: the
            # object read was deleted since
            if err.response.get("Error", {}).get("Code") in LOST_RACE:
                return False
            raise
        return True

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        start = len(self.prefix) + 1 if self.prefix else 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._object(prefix)):
            keys += [o["Key"][start:] for o in page.get("Contents", [])]
        return sorted(keys)

    def local_path(self, key: str, workdir: Path) -> Path:
        target = workdir / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if not self.exists(key):
            raise StoreError(f"{self.uri(key)} does not exist")
        self.client.download_file(self.bucket, self._object(key), str(target))
        return target

    def verify(self, ref: ArtifactRef) -> bool:
        try:
            head = self._head(self.key(ref.uri))
        except StoreError:
            return False
        return (
            head is not None
            and head.get("ContentLength") == ref.bytes
            and head.get("Metadata", {}).get("sha256") == ref.sha256
        )


def make_s3_client(endpoint: str | None = None, region: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=10,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 5},
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ.get(S3_ENDPOINT_ENV),
        region_name=region or os.environ.get(S3_REGION_ENV, "us-east-1"),
        config=config,
    )


def open_store(root: str) -> Store:
    """A store from its root URI: a folder path, `file://…` or `s3://bucket/prefix`."""
    return open_location(StoreURI.parse(root))


def open_location(location: StoreURI) -> Store:
    if location.scheme == S3:
        return S3Store(location.bucket, location.path)
    if location.scheme == FILE:
        return LocalStore(location.local_path)
    raise StoreError(f"unsupported store {location.uri!r}: use a folder path or s3://bucket/prefix")
