"""Deterministic child names and the standard labels."""

from __future__ import annotations

import hashlib
import re

from conveyor.api.common import GROUP

MANAGED_BY = "conveyor-operator"


def child_name(parent: str, suffix: str, limit: int = 63) -> str:
    name = f"{parent}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11].rstrip('-')}-{digest}"


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars, alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value)
    if len(cleaned) > 63:
        cleaned = child_name(cleaned[:40], "x", 63)
    return cleaned.strip("-._")


def standard_labels(
    *,
    component: str,
    instance: str,
    pipeline: str | None = None,
    run: str | None = None,
    stage: str | None = None,
    deployment: str | None = None,
) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "conveyor",
        "app.kubernetes.io/instance": label_value(instance),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "conveyor",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    for key, value in (
        ("pipeline", pipeline),
        ("pipelinerun", run),
        ("stage", stage),
        ("modeldeployment", deployment),
    ):
        if value:
            labels[f"{GROUP}/{key}"] = label_value(value)
    return labels
