"""Model files: scikit-learn objects saved with skops and loaded without pickle.

Loading checks every type in the file against an explicit allowlist of module prefixes;
anything else (a custom class, `builtins.eval`, ...) is refused before it is constructed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.errors import UserError

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
MEDIA_TYPE = "application/x-skops"


class UntrustedModel(UserError):
    pass


def save_model(obj: Any, path: Path) -> None:
    import skops.io as sio

    sio.dump(obj, path)


def trusted_types(path: Path, prefixes: tuple[str, ...] = TRUSTED_PREFIXES) -> list[str]:
    """The types the file needs; raises UntrustedModel if any falls outside `prefixes`."""
    import skops.io as sio

    needed = sio.get_untrusted_types(file=path)
    bad = [t for t in needed if not t.startswith(prefixes)]
    if bad:
        raise UntrustedModel(
            f"{path.name} contains types outside the trusted list ({', '.join(prefixes)}): "
            + ", ".join(sorted(bad))
        )
    return list(needed)


def load_model(path: Path, prefixes: tuple[str, ...] = TRUSTED_PREFIXES) -> Any:
    import skops.io as sio

    return sio.load(path, trusted=trusted_types(path, prefixes))
