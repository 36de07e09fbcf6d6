"""Cache keys: what must be equal for a stage's earlier result to be reused."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from conveyor.engine.invocation import ArtifactRef

# Fields of a stage that change its result; retries, timeouts and resources do not.
_RESULT_FIELDS = ("uses", "image", "command", "args", "env")


def cache_key(
    stage: Mapping[str, Any],
    options: Mapping[str, Any],
    inputs: Mapping[str, Mapping[str, ArtifactRef]],
    version: str,
    external: Mapping[str, str] | None = None,
) -> str:
    """A digest of the stage definition, resolved options, input digests, the Conveyor
    version (or image digest) and external facts (a source file's digest, the champion)."""
    material = {
        "stage": {k: stage.get(k) for k in _RESULT_FIELDS},
        "options": options,
        "inputs": {dep: {n: r.sha256 for n, r in outs.items()} for dep, outs in inputs.items()},
        "version": version,
        "external": dict(external or {}),
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
