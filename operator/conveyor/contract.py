"""The names the operator and the pods it starts agree on, spelled once.

A stage pod (or a locally launched stage) reads its invocation and where to write its failure
from the environment the manifests and the launchers set; the operator reads a Job's cache key
and a model server's model back from the annotations it wrote, finds a run's Jobs by label and
probes the model server on its paths. Change a name here and both sides change together.

Imports nothing from Conveyor, so every layer may import it.
"""

from __future__ import annotations

from typing import Final

GROUP_PREFIX: Final = "conveyor.dev/"

# Environment of a stage process (a Job's container or a locally launched stage).
INVOCATION_ENV: Final = "CONVEYOR_INVOCATION"  # the StageInvocation as JSON
TERMINATION_LOG_ENV: Final = "CONVEYOR_TERMINATION_LOG"  # where the stage writes its failure
TERMINATION_LOG_PATH: Final = "/dev/termination-log"  # the kubelet's default, also the Job's
S3_ENDPOINT_ENV: Final = "CONVEYOR_S3_ENDPOINT"  # an S3-compatible endpoint (MinIO)
S3_REGION_ENV: Final = "AWS_DEFAULT_REGION"  # boto3's own variable

# Annotations the operator writes and reads back.
CACHE_KEY_ANNOTATION: Final = GROUP_PREFIX + "cache-key"  # on a stage's Job
MODEL_ANNOTATION: Final = GROUP_PREFIX + "model-sha256"  # on a model server's pod template
TRIGGER_REASON_ANNOTATION: Final = GROUP_PREFIX + "trigger-reason"  # on a triggered PipelineRun

# Labels the operator sets (engine.names.standard_labels) and selects by.
PIPELINE_LABEL: Final = GROUP_PREFIX + "pipeline"
STAGE_LABEL: Final = GROUP_PREFIX + "stage"
RUN_LABEL: Final = GROUP_PREFIX + "pipelinerun"
RUN_UID_LABEL: Final = GROUP_PREFIX + "pipelinerun-uid"
DEPLOYMENT_LABEL: Final = GROUP_PREFIX + "modeldeployment"
TRIGGER_LABEL: Final = GROUP_PREFIX + "trigger"  # schedule | drift | ...

# The model server's HTTP surface that the operator's manifests and drift reader rely on.
SERVE_PORT_NAME: Final = "http"
HEALTH_LIVE_PATH: Final = "/v2/health/live"
HEALTH_READY_PATH: Final = "/v2/health/ready"
METRICS_PATH: Final = "/metrics"
