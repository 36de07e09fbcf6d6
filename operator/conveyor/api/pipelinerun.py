"""The PipelineRun resource: one execution of a Pipeline."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from conveyor.api.common import Condition, Dns1123Label, Model, Object, Status, exactly_one
from conveyor.api.pipeline import PipelineSpec

# Every spec field but `cancelled` and `approval` (set once) is immutable; the rule is
# generated from this list so that adding a field cannot silently make it mutable.
IMMUTABLE_RUN_FIELDS = ("pipelineRef", "pipelineSpec", "params", "resumeFrom", "timeoutSeconds")


def _immutable_rule(fields: tuple[str, ...]) -> str:
    parts = [
        f"(has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f}))" for f in fields
    ]
    return " && ".join(parts)


class PipelineRef(Model):
    name: Dns1123Label


class ResumeFrom(Model):
    run: Dns1123Label = Field(description="Earlier run whose successful stages are reused.")


class Approval(Model):
    """A human's decision on a model that waits for approval (the evaluate stage's
    `promotion: Manual`). Set once: the API server refuses to change or remove it, so the run
    object (with the audit log and managedFields) says who decided what."""

    model_config = ConfigDict(  # merged with Model's
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.decision != 'Reject' || (has(self.reason) && size(self.reason) > 0)",
                    "message": "a rejection needs a reason: set spec.approval.reason",
                }
            ]
        },
    )

    decision: Literal["Approve", "Reject"]
    by: str = Field(min_length=1, max_length=253, description="Who decided (recorded with the model).")
    reason: str = Field(default="", max_length=1024, description="Why; required to reject.")

    @model_validator(mode="after")
    def _reasoned(self) -> Approval:
        if self.decision == "Reject" and not self.reason:
            raise ValueError("a rejection needs a reason: set spec.approval.reason")
        return self


class PipelineRunSpec(Model):
    model_config = ConfigDict(  # merged with Model's
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": _immutable_rule(IMMUTABLE_RUN_FIELDS),
                    "message": "a PipelineRun's spec is immutable except `cancelled`; "
                    "create a new run (use resumeFrom to reuse this one's stages)",
                },
                {
                    "rule": "!has(oldSelf.approval) "
                    "|| (has(self.approval) && self.approval == oldSelf.approval)",
                    "message": "spec.approval is set once: a decision cannot be changed or withdrawn",
                },
                {
                    "rule": "has(self.pipelineRef) != has(self.pipelineSpec)",
                    "message": "set exactly one of pipelineRef or pipelineSpec",
                },
            ]
        },
    )

    pipeline_ref: PipelineRef | None = None
    pipeline_spec: PipelineSpec | None = None
    params: dict[str, str] = Field(default_factory=dict)
    resume_from: ResumeFrom | None = None
    timeout_seconds: int | None = Field(default=None, ge=1, description="Whole-run limit.")
    cancelled: bool = Field(default=False, description="Set true to cancel the run.")
    approval: Approval | None = Field(
        default=None,
        description="Approve or reject the model that waits for approval (status.model.approval "
        "Pending); set once.",
    )

    @model_validator(mode="after")
    def _one_pipeline(self) -> PipelineRunSpec:
        exactly_one(
            self, "pipeline_ref", "pipeline_spec", "set exactly one of `pipelineRef` or `pipelineSpec`"
        )
        return self


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class StagePhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


FINISHED_RUN_PHASES = frozenset({RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED})


class StageStatus(Status):
    name: str
    phase: StagePhase
    attempts: int = 0
    start_time: datetime | None = None
    finish_time: datetime | None = None
    message: str = ""
    outputs: dict[str, str] = Field(default_factory=dict, description="Output name -> URI.")
    metrics: dict[str, float] = Field(default_factory=dict)
    cache_hit: bool = False
    cache_key: str | None = None


class ModelRecord(Status):
    uri: str
    sha256: str
    metrics: dict[str, float] = Field(default_factory=dict)
    promoted: bool = Field(default=False, description="This run made it the champion.")
    passed: bool | None = Field(
        default=None, description="Whether it passed its gate and champion comparison (None: not evaluated)."
    )
    decision: str = Field(default="", description="Why the gate passed or rejected it.")
    version: int | None = Field(
        default=None, description="Its model version (`conveyor models`), when it is a promoted one."
    )
    stage: str = Field(default="", description="The evaluate stage that decided on it.")
    hyperparameters: dict[str, str] = Field(
        default_factory=dict, description="Estimator parameters it was trained with (JSON values)."
    )
    approval: Literal["Pending", "Approved", "Rejected"] | None = Field(
        default=None, description="With promotion: Manual: whether a human has decided on it."
    )
    approved_by: str = Field(default="", description="Who approved or rejected it.")
    approval_reason: str = Field(default="", description="Why it was rejected (or approved).")
    approval_time: datetime | None = None


class PipelineRunStatus(Status):
    observed_generation: int | None = None
    phase: RunPhase = RunPhase.PENDING
    conditions: list[Condition] = Field(default_factory=list)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    current_stage: str | None = None
    duration: str | None = Field(default=None, description="Wall time, once finished (e.g. 1m23s).")
    stages: list[StageStatus] = Field(default_factory=list)
    model: ModelRecord | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    run_record: str | None = Field(default=None, description="URI of the run's lineage record.")
    pipeline_spec: PipelineSpec | None = Field(
        default=None, description="The pipeline as it was when the run started."
    )


class PipelineRun(Object):
    kind: Literal["PipelineRun"] = "PipelineRun"
    spec: PipelineRunSpec
    status: PipelineRunStatus | None = None
