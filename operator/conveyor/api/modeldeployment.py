"""The ModelDeployment resource (first draft): serve a model, watch it for drift and for its
live quality (labels sent to the server), retrain."""

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
                },
                {
                    "rule": "!has(self.version) || has(self.fromPipeline)",
                    "message": "version pins one of fromPipeline's model versions: set fromPipeline too",
                },
            ]
        },
    )

    uri: str | None = Field(default=None, description="Model URI (s3://... of a run's model).")
    from_pipeline: Dns1123Label | None = Field(
        default=None, description="Serve the current champion of this Pipeline (or its `version`)."
    )
    version: int | None = Field(
        default=None,
        ge=1,
        description="With fromPipeline: serve this promoted version (`conveyor models PIPELINE` lists "
        "them) instead of following the champion.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        exactly_one(self, "uri", "from_pipeline", "set exactly one of `uri` or `fromPipeline`")
        if self.version is not None and self.from_pipeline is None:
            raise ValueError("`version` pins one of fromPipeline's model versions: set `fromPipeline` too")
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


# Live quality from labels sent to the model server's feedback endpoint: a retraining run when
# `metric` stays under `min` (accuracy, f1) or over `max` (rmse, mae) for `for`, once at least
# `minSamples` of the last `window` labelled predictions are in.
class PerformanceMonitoring(Model):
    model_config = ConfigDict(  # merged with Model's
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.metric in ['accuracy', 'f1'] ? (has(self.min) && !has(self.max)) : "
                    "(has(self.max) && !has(self.min))",
                    "message": "accuracy and f1 take min (retrain below it); rmse and mae take max "
                    "(retrain above it)",
                },
                {"rule": "self.minSamples <= self.window", "message": "minSamples must be at most window"},
            ]
        },
    )

    metric: Literal["accuracy", "f1", "rmse", "mae"]
    min_: float | None = Field(default=None, alias="min", description="accuracy, f1: retrain below it.")
    max_: float | None = Field(default=None, alias="max", description="rmse, mae: retrain above it.")
    window: int = Field(default=1000, ge=10, le=100000, description="Labelled predictions kept.")
    min_samples: int = Field(default=100, ge=1, description="Labels needed before acting.")
    for_: str = Field(default="10m", alias="for", pattern=r"^[0-9]+(s|m|h)$")

    @model_validator(mode="after")
    def _bound(self) -> PerformanceMonitoring:
        higher_is_better = self.metric in ("accuracy", "f1")
        wanted, other = ("min", "max") if higher_is_better else ("max", "min")
        if getattr(self, wanted + "_") is None or getattr(self, other + "_") is not None:
            raise ValueError(
                f"{self.metric} takes `{wanted}` (retrain when it is "
                f"{'under' if higher_is_better else 'over'} it), not `{other}`"
            )
        if higher_is_better and not 0 <= self.threshold <= 1:
            raise ValueError(f"min of {self.metric} is a fraction: between 0 and 1, not {self.threshold}")
        if self.min_samples > self.window:
            raise ValueError(f"minSamples ({self.min_samples}) must be at most window ({self.window})")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ("accuracy", "f1")

    @property
    def threshold(self) -> float:
        value = self.min_ if self.higher_is_better else self.max_
        assert value is not None  # the validator made sure
        return value


class Monitoring(Model):
    drift: DriftMonitoring | None = None
    performance: PerformanceMonitoring | None = None


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
    last_retrain_trigger: str | None = Field(default=None, description="drift or performance.")
    last_performance: float | None = Field(default=None, description="The live quality metric.")
    labelled_samples: int | None = Field(default=None, description="Labels the live metric is over.")
    performance_since: datetime | None = Field(
        default=None, description="Since when the live metric is past its bound."
    )
    last_good_model: str | None = Field(default=None, description="The last model that became ready.")
    last_good_sha256: str | None = None
    failed_model_sha256: str | None = Field(default=None, description="A model that never became ready.")


class ModelDeployment(Object):
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
