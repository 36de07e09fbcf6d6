"""Operator metrics, defined once (prometheus-client).

Every label value known in advance gets its series at import, at zero: a counter series that
first appears with the value 1 is invisible to `increase()` and `rate()`, so the failed-run
alert would miss the first failure after each operator start (a new pod is a new series).
"""

import platform

from prometheus_client import Counter, Gauge, Histogram

from conveyor import __version__
from conveyor.api.pipelinerun import FINISHED_RUN_PHASES

RECONCILED_KINDS = ("PipelineRun",)  # the kinds whose reconciles are timed and counted

BUILD_INFO = Gauge(
    "conveyor_build_info",
    "Always 1; the labels say which Conveyor (and Python) the operator runs.",
    ["version", "python_version"],
)
RUNS_FINISHED = Counter(
    "conveyor_pipelineruns_finished_total", "PipelineRuns that reached a final phase.", ["phase"]
)
JOBS_CREATED = Counter("conveyor_stage_jobs_created_total", "Stage Jobs created.")
STAGE_SECONDS = Histogram(
    "conveyor_stage_duration_seconds",
    "Duration of finished stages.",
    ["stage"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600),
)
HANDOFF_SECONDS = Histogram(
    "conveyor_stage_handoff_seconds",
    "From a stage's last dependency finishing to its Job being created.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
RECONCILE_SECONDS = Histogram("conveyor_reconcile_duration_seconds", "Reconcile time.", ["kind"])
RECONCILE_ERRORS = Counter("conveyor_reconcile_errors_total", "Reconciles that raised.", ["kind"])
QUEUE_DEPTH = Gauge(
    "conveyor_pipelinerun_queue_depth",
    "Runs waiting for a slot under maxConcurrentRuns.",
    ["namespace", "pipeline"],
)

BUILD_INFO.labels(version=__version__, python_version=platform.python_version()).set(1)
for _phase in sorted(FINISHED_RUN_PHASES):
    RUNS_FINISHED.labels(phase=_phase)
for _kind in RECONCILED_KINDS:
    RECONCILE_ERRORS.labels(kind=_kind)
    RECONCILE_SECONDS.labels(kind=_kind)
