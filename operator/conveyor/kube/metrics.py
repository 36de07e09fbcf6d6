"""Operator metrics, defined once (prometheus-client)."""

from prometheus_client import Counter, Gauge, Histogram

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
