"""The ModelDeployment resource (first draft): serve a model, watch it for drift, retrain."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from conveyor.api.common import (
    Condition,
    Dns1123Label,
    Model,
    Object,
    ResourceRequirements,
    Status,
    exactly_one,
)


class ModelSource(Model):
    model_config = ConfigDict(  # merged with Model's
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.uri) != has(self.fromPipeline)",
                    "message": "set exactly one of uri or fromPipeline",
                }
            ]
        },
    )

    uri: str | None = Field(default=None, description="Model URI (s3://... of a run's model).")
    from_pipeline: Dns1123Label | None = Field(
        default=None, description="Serve the current champion of this Pipeline."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        exactly_one(self, "uri", "from_pipeline", "set exactly one of `uri` or `fromPipeline`")
        return self


class Batching(Model):
    enabled: bool = False
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_latency_ms: int = Field(default=5, ge=1, le=1000)


class DriftMonitoring(Model):
    method: Literal["psi", "ks"] = "psi"
    threshold: float = Field(default=0.25, gt=0)
    window: int = Field(default=1000, ge=10)
    min_samples: int = Field(default=100, ge=1)
    for_: str = Field(default="10m", alias="for", pattern=r"^[0-9]+(s|m|h)$")


class Monitoring(Model):
    drift: DriftMonitoring | None = None


class Retrain(Model):
    pipeline_ref: Dns1123Label
    params: dict[str, str] = Field(default_factory=dict)
    cooldown: str = Field(default="1h", pattern=r"^[0-9]+(s|m|h)$")
    max_runs_per_day: int = Field(default=3, ge=0)


class Rollout(Model):
    strategy: Literal["Rolling"] = "Rolling"
    max_unavailable: int = Field(default=0, ge=0)
    progress_deadline_seconds: int = Field(
        default=300,
        ge=1,
        description="How long a new model's pods may take to become ready (the Deployment's "
        "progressDeadlineSeconds); past it the rollout has failed and the last good model is "
        "served again.",
    )


class ModelDeploymentSpec(Model):
    model: ModelSource
    replicas: int = Field(default=1, ge=0, le=100)
    resources: ResourceRequirements | None = None
    batching: Batching | None = None
    monitoring: Monitoring | None = None
    retrain: Retrain | None = None
    rollout: Rollout | None = None


class ModelDeploymentStatus(Status):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    model_uri: str | None = None
    model_version: str | None = None
    endpoint: str | None = None
    ready_replicas: int = 0
    last_drift_score: float | None = None
    drift_since: datetime | None = Field(default=None, description="Since when drift is over threshold.")
    last_retrain_run: str | None = None
    last_retrain_time: datetime | None = None
    last_retrain_reason: str | None = None
    last_good_model: str | None = Field(default=None, description="The last model that became ready.")
    last_good_sha256: str | None = None
    failed_model_sha256: str | None = Field(default=None, description="A model that never became ready.")


class ModelDeployment(Object):
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
