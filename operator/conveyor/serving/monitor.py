"""Metrics, defined once, and the drift monitor: a sliding window of recent inputs and
predictions, compared with the reference profile periodically, off the request path."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from conveyor.serving.drift import feature_drift

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "conveyor_requests_total", "Inference requests.", ["model", "endpoint", "code"], registry=REGISTRY
)
LATENCY = Histogram(
    "conveyor_request_duration_seconds",
    "Inference request latency.",
    ["model", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
PREDICTIONS = Counter(
    "conveyor_predictions_total",
    "Predictions, by class for classifiers.",
    ["model", "version", "class"],
    registry=REGISTRY,
)
FEATURE_DRIFT = Gauge(
    "conveyor_feature_drift",
    "Drift of one feature against the training profile.",
    ["model", "version", "feature", "method"],
    registry=REGISTRY,
)
DRIFT_SCORE = Gauge(
    "conveyor_drift_score",
    "The largest feature drift (the configured method).",
    ["model", "version"],
    registry=REGISTRY,
)
WINDOW_SIZE = Gauge("conveyor_drift_window_size", "Rows in the drift window.", ["model"], registry=REGISTRY)
BATCH_SIZE = Histogram(
    "conveyor_batch_size",
    "Rows per predict call.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)


class DriftMonitor:
    """Appends are O(1) under a lock; `compute()` runs in a background thread."""

    def __init__(
        self,
        model: str,
        version: str,
        profile: dict[str, Any] | None,
        window: int = 1000,
        min_samples: int = 100,
        method: str = "psi",
    ) -> None:
        self.model, self.version = model, version
        self.profile = profile or {}
        self.features = list(self.profile.get("features", {}))
        self.window: dict[str, deque[Any]] = {f: deque(maxlen=window) for f in self.features}
        self.predictions: deque[Any] = deque(maxlen=window)
        self.min_samples = min_samples
        self.method = method
        self.lock = threading.Lock()
        self.seen = 0
        self.last: dict[str, dict[str, float]] = {}

    def observe(self, rows: list[dict[str, Any]], predictions: list[Any]) -> None:
        with self.lock:
            for row in rows:
                for f in self.features:
                    self.window[f].append(row.get(f))
            self.predictions.extend(predictions)
            self.seen += len(rows)

    def compute(self) -> float | None:
        """Update the gauges; the drift score, or None below `min_samples`."""
        with self.lock:
            snapshot = {f: list(v) for f, v in self.window.items()}
            preds = list(self.predictions)
        size = len(preds)
        WINDOW_SIZE.labels(self.model).set(size)
        if size < self.min_samples or not self.features:
            return None
        stats = {f: feature_drift(self.profile["features"][f], values) for f, values in snapshot.items()}
        if self.profile.get("prediction"):
            stats["__prediction__"] = feature_drift(self.profile["prediction"], preds)
        for feature, by_method in stats.items():
            for method, value in by_method.items():
                FEATURE_DRIFT.labels(self.model, self.version, feature, method).set(value)
        score = max(
            (m.get(self.method, m.get("psi", 0.0)) for f, m in stats.items() if f != "__prediction__"),
            default=0.0,
        )
        DRIFT_SCORE.labels(self.model, self.version).set(score)
        self.last = stats
        return score


def exposition_registry() -> CollectorRegistry:
    """What /metrics exposes: this process's metrics, or all workers' in multiprocess mode."""
    import os

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
