"""Shared pieces of the three resources: the API identity, base models, conditions."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "conveyor.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "conveyor"

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_RE = re.compile(DNS1123_LABEL)
PARAM_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"

Dns1123Label = Annotated[str, Field(pattern=DNS1123_LABEL, min_length=1, max_length=63)]


class Model(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        defer_build=True,  # validators built on first use: `conveyor run` builds only what it uses
    )


def exactly_one(model: BaseModel, first: str, second: str, message: str) -> None:
    """A model-level rule: one of two optional fields is set, never both, never neither."""
    if (getattr(model, first) is None) == (getattr(model, second) is None):
        raise ValueError(message)


class Status(Model):
    """Base of status models: tolerant of fields written by newer operators."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=True
    )


class Reason(StrEnum):
    """CamelCase reasons, reused as event reasons."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    STAGE_FAILED = "StageFailed"
    INVALID_SPEC = "InvalidSpec"
    PIPELINE_NOT_FOUND = "PipelineNotFound"
    TIMED_OUT = "TimedOut"
    CANCELLED = "Cancelled"
    DRIFT_DETECTED = "DriftDetected"
    PERFORMANCE_DEGRADED = "PerformanceDegraded"
    VALID = "Valid"
    MODEL_NOT_FOUND = "ModelNotFound"
    ROLLING_OUT = "RollingOut"
    ROLLOUT_FAILED = "RolloutFailed"
    AVAILABLE = "Available"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    CREDENTIALS_NOT_ALLOWED = "CredentialsNotAllowed"


class Condition(Status):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    observed_generation: int | None = None
    last_transition_time: datetime | None = None


class ObjectMeta(BaseModel):
    """The subset of metadata Conveyor reads; everything else is kept as given."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Object(Model):
    """Base of the three kinds: apiVersion and metadata, tolerant of the fields the API server
    adds (each kind declares its `kind`, `spec` and `status`)."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)


class ResourceRequirements(Model):
    """Container resources, as in a Pod spec."""

    requests: dict[str, str | int] | None = None
    limits: dict[str, str | int] | None = None


class EnvVar(Model):
    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str = ""


class SecretRef(Model):
    name: Dns1123Label = Field(description="Name of a Secret in the same namespace.")


class S3Store(Model):
    bucket: str = Field(min_length=3, max_length=63, description="Bucket holding the artifacts.")
    prefix: str = Field(default="", description="Key prefix inside the bucket.")
    endpoint: str | None = Field(
        default=None, description="S3-compatible endpoint URL (MinIO); AWS when empty."
    )
    region: str | None = None
    credentials_secret: str | None = Field(
        default=None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for stage pods, "
        'mounted via envFrom; it must carry the label conveyor.dev/credentials: "true".',
    )
    read_only_credentials_secret: str | None = Field(
        default=None,
        description="Secret with credentials that can only read the store, for model servers "
        "(which are never given credentialsSecret); labelled like credentialsSecret.",
    )


class ArtifactStore(Model):
    s3: S3Store | None = None
