"""JSON merge patches (RFC 7386): a field that is gone must be sent as null, or it stays.

JSON has no NaN or infinity (an API server rejects a body holding them), yet a metric of a
constant column or a drift score can be one. Such a number is never written: it is left out
of the status, which a merge patch turns into null (the field is removed).
"""

from __future__ import annotations

import math
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


def is_finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def finite_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], str]:
    """The finite metrics, and a note naming those left out ("" when none was)."""
    kept = {k: v for k, v in metrics.items() if is_finite(v)}
    dropped = [f"{k} ({v})" for k, v in metrics.items() if k not in kept]
    return kept, ("not finite, left out: " + ", ".join(dropped)) if dropped else ""


def without_non_finite(value: Any) -> Any:
    """`value` with every NaN or infinity left out of its objects (None in a list)."""
    if isinstance(value, dict):
        return {k: without_non_finite(v) for k, v in value.items() if is_finite(v)}
    if isinstance(value, list):
        return [without_non_finite(v) if is_finite(v) else None for v in value]
    return value


def status_patch(stored: dict[str, Any] | None, status: Any) -> dict[str, Any]:
    """`{"status": ...}` turning the stored status into `status` (a pydantic model)."""
    wire: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"status": merge_patch(stored or {}, without_non_finite(wire))}
