"""Deterministic child names and the standard labels.

Object names are DNS-1123 subdomains (up to 253 characters, dots allowed); a label value holds
at most 63 and a child's name must often be a DNS-1123 label (a Job's name becomes its pods'
`job-name` label) or a DNS-1035 label (a Service). Whatever is derived from a name goes through
one of the functions here: a name that already fits is kept as it is, any other one becomes a
readable prefix and a hash of the whole, so distinct names never meet in the same value.
"""

from __future__ import annotations

import hashlib
import re

from conveyor.contract import DEPLOYMENT_LABEL, PIPELINE_LABEL, RUN_LABEL, STAGE_LABEL

MANAGED_BY = "conveyor-operator"
LIMIT = 63
DIGEST = 10
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:DIGEST]


def _hashed(value: str, cleaned: str, limit: int, trim: str) -> str:
    """`cleaned` cut to fit `limit` with a hash of the original `value` appended."""
    head = cleaned[: limit - DIGEST - 1].strip(trim)
    return f"{head}-{_digest(value)}" if head else _digest(value)


def label_value(value: str) -> str:
    """The label value standing for `value` (usually an object name): `value` itself when it
    is a valid label value, else a readable prefix and a hash of the whole (<= 63 characters,
    alphanumeric at both ends). Selectors must use it too, never the raw name."""
    if len(value) <= LIMIT and LABEL_VALUE_RE.match(value):
        return value
    return _hashed(value, re.sub(r"[^A-Za-z0-9._-]", "-", value), LIMIT, "-._")


def dns_label(value: str, limit: int = LIMIT) -> str:
    """`value` as a DNS-1123 label: itself when it is one, else cleaned, cut, hashed."""
    if len(value) <= limit and DNS1123_LABEL_RE.match(value):
        return value
    return _hashed(value, re.sub(r"[^a-z0-9-]", "-", value.lower()), limit, "-")


def dns1035_label(value: str, limit: int = LIMIT) -> str:
    """`value` as a DNS-1035 label (a Service's name: it starts with a letter)."""
    if len(value) <= limit and DNS1035_LABEL_RE.match(value):
        return value
    return dns_label(value if re.match(r"[a-z]", value) else f"x-{value}", limit)


def child_name(parent: str, suffix: str, limit: int = LIMIT) -> str:
    """The name of a child object: `<parent>-<suffix>`, a DNS-1123 label of at most `limit`
    characters (a hash of the whole when it had to be shortened or cleaned)."""
    return dns_label(f"{parent}-{suffix}", limit)


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
        (PIPELINE_LABEL, pipeline),
        (RUN_LABEL, run),
        (STAGE_LABEL, stage),
        (DEPLOYMENT_LABEL, deployment),
    ):
        if value:
            labels[key] = label_value(value)
    return labels
