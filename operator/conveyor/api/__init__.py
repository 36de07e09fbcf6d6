"""Pydantic models of the three resources: the single source of truth for the CRDs."""

from conveyor.api.common import API_VERSION, CATEGORY, GROUP, VERSION, Condition, Reason
from conveyor.api.modeldeployment import ModelDeployment, ModelDeploymentSpec
from conveyor.api.pipeline import Pipeline, PipelineSpec, Stage
from conveyor.api.pipelinerun import PipelineRun, PipelineRunSpec, PipelineRunStatus, StageStatus

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "VERSION",
    "Condition",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "Pipeline",
    "PipelineRun",
    "PipelineRunSpec",
    "PipelineRunStatus",
    "PipelineSpec",
    "Reason",
    "Stage",
    "StageStatus",
]
