"""skops archives made reproducible: the same model gives the same bytes, whatever process
saves it and when (a stage's outputs are in the cache keys of the stages after it).

skops alone writes, for one and the same model, bytes that differ from save to save:

- an array's member is named after the array's `id()` (a memory address), a bytes member after
  a random UUID, and shared objects are keyed by `id()` (`__id__` in the schema);
- every member is dated with the time of writing;
- a set's items are listed in hash order, which changes with the process's hash seed;
- a structured array (a decision tree's nodes) is written with its padding bytes, which hold
  whatever the memory held.

`canonical_skops` renames members 1.npy, 2.npz, ... and renumbers `__id__`s 1, 2, ... in the
order the schema first names them, sorts sets, zeroes padding and dates every member
1980-01-01, the earliest date a zip can hold. What a loaded model is does not change.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

SCHEMA = "schema.json"  # the member describing the object; the others hold arrays
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def canonical_skops(data: bytes) -> bytes:
    """`data`, a skops archive, rewritten as described in the module's docstring. An archive
    with a member its schema does not name by `file` (a format this does not know) is returned
    as it is: loadable beats reproducible."""
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        schema = json.loads(src.read(SCHEMA))
        members = set(src.namelist()) - {SCHEMA}
        files: dict[str, str] = {}
        _renumber(schema, {}, files, members)
        if set(files) != members:
            return data
        contents = [(new, _canonical_array(new, src.read(old))) for old, new in files.items()]
    contents.append((SCHEMA, json.dumps(schema, indent=2).encode()))
    return _zip(contents)


def _zip(contents: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for name, content in contents:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, whatever the platform writing it
            info.external_attr = 0o600 << 16  # what skops' own writes give a member
            dst.writestr(info, content)
    return out.getvalue()


def _canonical_array(name: str, data: bytes) -> bytes:
    """An `.npy` member with a structured array's padding zeroed (its fields copied into a
    zeroed array of the same type); any other member as it is (numpy dates the members of a
    sparse matrix's `.npz` 1980-01-01 itself)."""
    import numpy as np

    if not name.endswith(".npy"):
        return data
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError:
        return data
    if array.dtype.names is None:
        return data
    clean = np.zeros(array.shape, dtype=array.dtype)
    for field in array.dtype.names:
        clean[field] = array[field]
    out = io.BytesIO()
    np.save(out, clean, allow_pickle=False)
    return out.getvalue()


def _renumber(node: Any, ids: dict[int, int], files: dict[str, str], members: set[str]) -> None:
    """Rename, in schema order, what skops named after memory addresses, and sort sets."""
    if isinstance(node, list):
        for item in node:
            _renumber(item, ids, files, members)
        return
    if not isinstance(node, dict):
        return
    if "__loader__" in node:  # a node of skops' tree, not a dict of the saved object
        if node["__loader__"] == "SetNode" and isinstance(node.get("content"), list):
            node["content"].sort(key=lambda item: json.dumps(_without_ids(item), sort_keys=True))
        old_id = node.get("__id__")
        if isinstance(old_id, int) and not isinstance(old_id, bool):
            node["__id__"] = ids.setdefault(old_id, len(ids) + 1)  # 0 would read as "no id"
        name = node.get("file")
        if isinstance(name, str) and name in members:
            node["file"] = files.setdefault(name, f"{len(files) + 1}{Path(name).suffix}")
    for value in node.values():
        _renumber(value, ids, files, members)


def _without_ids(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_ids(item) for item in node]
    if isinstance(node, dict):
        return {k: _without_ids(v) for k, v in node.items() if k != "__id__"}
    return node
