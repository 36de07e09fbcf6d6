"""Model files: scikit-learn objects saved with skops and loaded without pickle.

`load_model` takes the SHA-256 its caller's records give for the file and reads the file once:
the bytes it hashes are the bytes it parses. A file whose digest differs is refused before any
of it is interpreted; a file holding a type outside skops' defaults and `trusted.TRUSTED_TYPES`
(a function, a class the built-in stages never write) is refused before anything is built.

`save_model` writes the same bytes for the same model, whichever process saves it and when
(`skopsfile.canonical_skops`): a stage's outputs are part of the cache keys of the stages after it, so
bytes that changed with the clock or the memory layout made a re-run of identical work look new
to everything downstream.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

from conveyor.artifacts.skopsfile import canonical_skops
from conveyor.artifacts.trusted import TRUSTED_TYPES
from conveyor.errors import UserError

MEDIA_TYPE = "application/x-skops"


class UntrustedModel(UserError):
    """The file holds types Conveyor does not trust; the message names each one."""


class DigestMismatch(UserError):
    """The file is not the one its records describe (it was changed or replaced)."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"refusing to load {path}: its SHA-256 is {actual}, expected {expected} "
            "(the file was changed after it was recorded)"
        )
        self.path, self.expected, self.actual = path, expected, actual


def save_model(obj: Any, path: Path) -> None:
    import skops.io as sio

    path.write_bytes(canonical_skops(sio.dumps(obj)))


def _needed_types(data: bytes, path: Path) -> list[str]:
    """The types in a skops file beyond skops' own defaults (`path` names it in errors)."""
    import skops.io as sio

    try:
        return list(sio.get_untrusted_types(data=data))
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise UserError(f"{path} is not a skops model file: {err}") from None


def load_model(path: Path, sha256: str) -> Any:
    """The object in `path`, whose recorded SHA-256 is `sha256`; refused if either check fails."""
    import skops.io as sio

    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DigestMismatch(path, sha256, actual)
    needed = _needed_types(data, path)
    bad = [t for t in needed if t not in TRUSTED_TYPES]
    if bad:
        raise UntrustedModel(
            f"refusing to load {path}: it holds type(s) the built-in stages never write: " + ", ".join(bad)
        )
    return sio.loads(data, trusted=needed)
