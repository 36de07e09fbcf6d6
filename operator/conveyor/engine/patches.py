"""JSON merge patches (RFC 7386): a field that is gone must be sent as null, or it stays."""

from __future__ import annotations

from typing import Any


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The patch that turns `old` into `new`; lists and scalars are replaced whole."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before or key not in old:
            patch[key] = value
    return patch


def status_patch(stored: dict[str, Any] | None, status: Any) -> dict[str, Any]:
    """`{"status": ...}` turning the stored status into `status` (a pydantic model)."""
    wire: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"status": merge_patch(stored or {}, wire)}
