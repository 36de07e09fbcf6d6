"""The operator's settings: one object, built once at start from CONVEYOR_* variables."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from pydantic import BaseModel, Field, ValidationError, field_validator

from conveyor import __version__
from conveyor.api.common import ResourceRequirements

PREFIX = "CONVEYOR_"


class Settings(BaseModel):
    image: str = Field(
        default=f"ghcr.io/conveyor-ml/conveyor:{__version__}",
        description="Image of built-in stage pods and model servers.",
    )
    image_pull_policy: str = "IfNotPresent"
    store: str | None = Field(
        default=None, description="s3://bucket/prefix for pipelines without spec.artifacts.s3"
    )
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint (MinIO) of `store`.")
    credentials_secret: str | None = Field(
        default=None,
        description="Secret with S3 credentials for stage pods, when the pipeline names none.",
    )
    read_only_credentials_secret: str | None = Field(
        default=None,
        description="Secret with read-only S3 credentials for model servers, when the pipeline names none.",
    )
    job_ttl_seconds: int = Field(default=3600, ge=0)
    resync_seconds: float = Field(default=30.0, gt=0, description="Safety-net look at a running run.")
    pipeline_resync_seconds: float = Field(
        default=30.0, gt=0, description="How often each Pipeline is looked at (schedules, history)."
    )
    drift_seconds: float = Field(
        default=15.0, gt=0, description="How often a ModelDeployment's drift is read."
    )
    stage_service_account: str | None = None
    pod_run_as_user: int | None = Field(
        default=10001,
        ge=1,
        description="UID (GID, fsGroup) of stage pods and model servers; empty: none (OpenShift sets it).",
    )
    stage_resources: ResourceRequirements | None = Field(
        default=None,
        description="Resources of a stage pod whose stage sets none: JSON, as in a Pod spec.",
    )
    namespaces: list[str] = Field(default_factory=list)
    prometheus_url: str | None = Field(
        default=None, description="Read drift scores from this Prometheus instead of the model servers' pods."
    )
    metrics_port: int = 8080
    health_port: int = 8081

    @field_validator("pod_run_as_user", mode="before")
    @classmethod
    def _empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("stage_resources", mode="before")
    @classmethod
    def _json(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value) if value.strip() else None
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON ({err.msg}): {value!r}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = [v for v in raw.split(",") if v] if name == "namespaces" else raw
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            bad = ", ".join(f"{PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" for e in err.errors())
            raise ValueError(f"invalid operator settings: {bad}") from None
