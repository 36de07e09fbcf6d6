"""Store URIs: the one place that builds and parses `s3://bucket/path` and `file:///path`.

A `StoreURI` names a store's root or anything inside it. S3 URIs are written as they are
(`s3://bucket/a b` is the key `a b`), file URIs as `Path.as_uri()` writes them
(percent-encoded) and are decoded when parsed, so `StoreURI.parse(u.uri) == u` both ways.
What lives where below a root is `layout.py`'s business, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from conveyor.errors import ConveyorError

S3 = "s3"
FILE = "file"


class StoreError(ConveyorError, RuntimeError):
    """A store cannot be opened or an object in it cannot be read."""


@dataclass(frozen=True)
class StoreURI:
    """`scheme` is "s3" or "file"; `bucket` is empty for a folder; `path` has no leading or
    trailing '/' (a folder's absolute path without its leading '/')."""

    scheme: str
    bucket: str
    path: str

    @classmethod
    def s3(cls, bucket: str, prefix: str = "") -> StoreURI:
        if not bucket or "/" in bucket:
            raise StoreError(f"bad bucket name {bucket!r}: write s3://bucket/prefix")
        return cls(S3, bucket, prefix.strip("/"))

    @classmethod
    def folder(cls, path: Path) -> StoreURI:
        """A local folder, made absolute (symlinks resolved, as the local store does)."""
        return cls(FILE, "", path.resolve().as_posix().strip("/"))

    @classmethod
    def parse(cls, text: str) -> StoreURI:
        """`s3://bucket/prefix`, `file:///path` or a plain folder path (made absolute)."""
        return cls.parse_uri(text) if "://" in text else cls.folder(Path(text))

    @classmethod
    def parse_uri(cls, text: str) -> StoreURI:
        """`s3://bucket/prefix` or `file:///path`; a path is not a URI here (pure: no cwd)."""
        if "://" not in text:
            raise StoreError(f"{text!r} is not a URI: write s3://bucket/... or file:///...")
        s3 = split_s3(text)
        if s3 is not None:
            return cls.s3(*s3)
        if text.startswith(f"{FILE}://"):
            return cls(FILE, "", unquote(urlparse(text).path).strip("/"))
        raise StoreError(f"unsupported store {text!r}: use a folder path or s3://bucket/prefix")

    @property
    def uri(self) -> str:
        if self.scheme == FILE:
            return PurePosixPath("/" + self.path).as_uri()
        return f"s3://{self.bucket}" + (f"/{self.path}" if self.path else "")

    @property
    def parts(self) -> tuple[str, ...]:
        """The path's segments (the bucket is not one of them)."""
        return tuple(self.path.split("/")) if self.path else ()

    @property
    def local_path(self) -> Path:
        """The folder or file a file URI names."""
        if self.scheme != FILE:
            raise StoreError(f"{self.uri} is not a local path")
        return Path("/" + self.path)

    def join(self, key: str) -> StoreURI:
        """The URI of `key` ('/'-separated) below this one."""
        key = key.strip("/")
        if not key:
            return self
        return StoreURI(self.scheme, self.bucket, f"{self.path}/{key}" if self.path else key)

    def parent(self, levels: int = 1) -> StoreURI:
        """This URI without its last `levels` segments."""
        parts = self.parts
        if levels > len(parts):
            raise StoreError(f"{self.uri} has fewer than {levels} segments below its bucket or /")
        return StoreURI(self.scheme, self.bucket, "/".join(parts[: len(parts) - levels]))

    def key(self, uri: str) -> str:
        """The key of `uri` inside this root; a StoreError if it is not inside."""
        inner = StoreURI.parse_uri(uri)
        if (
            (inner.scheme, inner.bucket) != (self.scheme, self.bucket)
            or inner.parts[: len(self.parts)] != self.parts
            or len(inner.parts) == len(self.parts)
        ):
            raise StoreError(f"{uri} is not inside the store {self.uri}")
        return "/".join(inner.parts[len(self.parts) :])

    def __str__(self) -> str:
        return self.uri


def split_s3(text: str) -> tuple[str, str] | None:
    """(bucket, path) of an `s3://` URI, the bucket unchecked (the caller validates it, to say
    which field is wrong); None for anything else."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme != S3:
        return None
    bucket, _, path = rest.partition("/")
    return bucket, path.strip("/")
