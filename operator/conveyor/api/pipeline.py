"""The Pipeline resource: a DAG of stages with parameters and an artifact store."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from conveyor.api.common import (
    PARAM_NAME,
    ArtifactStore,
    Condition,
    Dns1123Label,
    EnvVar,
    Model,
    Object,
    ResourceRequirements,
    Status,
    exactly_one,
)


class Param(Model):
    name: str = Field(pattern=PARAM_NAME, max_length=128)
    default: str | None = Field(default=None, description="Used when a run does not set it.")
    description: str = ""


class Stage(Model):
    """One step of the pipeline: a built-in (`uses`) or a custom container (`image`)."""

    model_config = ConfigDict(  # merged with Model's
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.uses) != has(self.image)",
                    "message": "set exactly one of uses (a built-in stage) or image (a custom one)",
                }
            ]
        },
    )

    name: Dns1123Label = Field(description="Stage name, a DNS-1123 label.")
    depends_on: list[str] = Field(default_factory=list, description="Stages that run first.")
    uses: str | None = Field(
        default=None, description="Built-in stage: ingest, validate, transform, train, evaluate, predict."
    )
    with_: dict[str, Any] | None = Field(
        default=None,
        alias="with",
        description="Options of the built-in stage; values may reference $(params.NAME).",
    )
    image: str | None = Field(default=None, description="Container image of a custom stage.")
    command: list[str] | None = None
    args: list[str] | None = None
    retries: int = Field(default=0, ge=0, le=10, description="Extra attempts after a failure.")
    timeout_seconds: int | None = Field(default=None, ge=1, description="Per-attempt limit.")
    resources: ResourceRequirements | None = None
    env: list[EnvVar] = Field(default_factory=list)
    cache: bool = Field(default=True, description="Reuse a previous identical result.")

    @model_validator(mode="after")
    def _one_kind(self) -> Stage:
        exactly_one(
            self, "uses", "image", "set exactly one of `uses` (a built-in stage) or `image` (a custom stage)"
        )
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.with_ or {})


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class PipelineSpec(Model):
    params: list[Param] = Field(default_factory=list)
    artifacts: ArtifactStore | None = None
    schedule: str | None = Field(
        default=None,
        description="Cron schedule creating runs, as a CronJob takes it: five fields or a macro "
        "(@hourly, @daily, @weekly, @monthly, @yearly).",
    )
    time_zone: str | None = Field(
        default=None, description="IANA time zone the schedule is read in, e.g. Europe/Paris (default UTC)."
    )
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    max_concurrent_runs: int | None = Field(default=None, ge=1)
    history_limit: int | None = Field(default=None, ge=0, description="Finished runs kept.")
    stages: list[Stage] = Field(min_length=1, max_length=64)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


class PipelineStatus(Status):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    last_schedule_time: str | None = None
    champion: str | None = Field(default=None, description="URI of the promoted model.")


class Pipeline(Object):
    kind: Literal["Pipeline"] = "Pipeline"
    spec: PipelineSpec
    status: PipelineStatus | None = None
