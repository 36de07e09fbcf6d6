"""The stage invocation: the one serializable value every executor turns into a process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.contract import INVOCATION_ENV


class ArtifactRef(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    uri: str
    sha256: str
    bytes: int
    media_type: str = "application/octet-stream"
    meta: dict[str, Any] = Field(default_factory=dict)


class StageInvocation(BaseModel):
    """What a stage needs to run, wherever it runs."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    namespace: str
    pipeline: str
    run: str
    stage: str
    uses: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    inputs: dict[str, dict[str, ArtifactRef]] = Field(
        default_factory=dict, description="Upstream stage -> its outputs."
    )
    store: str = Field(description="Root URI of the artifact store.")
    output_prefix: str = Field(description="URI under which this stage writes its outputs.")
    cache_key: str = ""
    version: str = ""

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StageInvocation:
        """The invocation an executor put in a stage's environment (the caller passes it)."""
        if INVOCATION_ENV not in env:
            raise KeyError(f"{INVOCATION_ENV} is not set: `conveyor stage` runs inside an executor")
        return cls.model_validate(json.loads(env[INVOCATION_ENV]))

    def find_input(self, name: str) -> ArtifactRef:
        """The upstream output called `name`; an error if none or several differ."""
        found = {ref.uri: ref for outs in self.inputs.values() for n, ref in outs.items() if n == name}
        if not found:
            have = sorted({n for outs in self.inputs.values() for n in outs})
            raise LookupError(
                f"stage {self.stage!r} needs an input {name!r} from a stage it depends on; "
                f"its dependencies provide: {', '.join(have) or 'nothing'}"
            )
        if len(found) > 1:
            raise LookupError(f"input {name!r} is ambiguous: provided by several dependencies")
        return next(iter(found.values()))
