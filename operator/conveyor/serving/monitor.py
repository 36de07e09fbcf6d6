"""Metrics, defined once, and the drift monitor: a sliding window of recent inputs and
predictions, compared with the reference profile periodically, off the request path.

The window keeps only the features the reference profile has, encoded as the statistics need
them (`drift.encode`: float64, or a small category code), in one fixed numpy ring buffer per
feature: its size is set when the server starts and no request can grow it, whatever the
values it sends. A byte bound caps the rows a large `window` would otherwise allocate."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from conveyor.drift import encode, encoded_drift, window_dtype
from conveyor.serving.fastpath import row_values

REGISTRY = CollectorRegistry()
# process_* (CPU seconds, resident memory, open files, start time) of this server process. In
# multiprocess mode (--workers > 1) /metrics gives the answering worker's, as workers' process
# metrics cannot be merged; the gauges below say how theirs combine (no per-pid series).
ProcessCollector(registry=REGISTRY)
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
    multiprocess_mode="livemax",  # the worst of the live workers' windows (as the operator reads it)
)
DRIFT_SCORE = Gauge(
    "conveyor_drift_score",
    "The largest feature drift (the configured method).",
    ["model", "version"],
    registry=REGISTRY,
    multiprocess_mode="livemax",  # the same
)
MODEL_BACKEND = Gauge(
    "conveyor_model_backend",
    "What computes predictions: onnx (onnxruntime) or skops (scikit-learn); 1 = in use.",
    ["model", "version", "backend"],
    registry=REGISTRY,
    multiprocess_mode="livemax",  # every worker serves the same model
)
WINDOW_SIZE = Gauge(
    "conveyor_drift_window_size",
    "Rows in the drift window.",
    ["model"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
BATCH_SIZE = Histogram(
    "conveyor_batch_size",
    "Rows per predict call.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)


log = logging.getLogger("conveyor.serving")
PREDICTION = "__prediction__"
DEFAULT_WINDOW_BYTES = 32 << 20  # 32 MiB: ~130,000 rows of 30 numeric features
Encoded = tuple[np.ndarray, dict[str, np.ndarray]]  # (numeric features [rows, k], other columns)


class DriftWindow:
    """The last `capacity` rows of each profiled column, written at one shared position: the
    numeric features in one [capacity, features] float64 ring (a batch is one write), every
    other column (categories, the prediction) in a ring of its own. `arrays` has each column
    (the numeric ones as views of the matrix). `capacity` is `rows`, or fewer if `rows` would
    take more than `max_bytes`. The order inside the buffer is not kept: no statistic depends
    on it."""

    def __init__(self, columns: dict[str, dict[str, Any]], rows: int, max_bytes: int) -> None:
        self.columns = columns  # name -> profile
        row_bytes = sum(window_dtype(p).itemsize for p in columns.values())
        self.capacity = max(0, min(rows, max_bytes // row_bytes if row_bytes else rows))
        if self.capacity < rows:
            log.warning(
                "the drift window keeps %d rows, not %d: %d bytes per row, bounded to %d bytes",
                self.capacity,
                rows,
                row_bytes,
                max_bytes,
            )
        self.numeric = [f for f, p in columns.items() if f != PREDICTION and p.get("kind") == "numeric"]
        self.others = [f for f in columns if f not in self.numeric]
        self.matrix = np.empty((self.capacity, len(self.numeric)))
        self.arrays = {f: self.matrix[:, j] for j, f in enumerate(self.numeric)}
        self.arrays.update({f: np.empty(self.capacity, window_dtype(columns[f])) for f in self.others})
        self.position = 0  # where the next row goes
        self.size = 0  # rows held, up to capacity

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes + sum(self.arrays[f].nbytes for f in self.others)

    def encode(self, rows: list[dict[str, Any]], predictions: list[Any]) -> Encoded:
        """A batch of rows (and its predictions) -> what `append` stores: the numeric features
        as one [rows, features] array, each other column alone; of a batch longer than the
        window, only its last `capacity` rows."""
        start = len(rows) - min(len(rows), self.capacity)
        rows, predictions = rows[start:], predictions[start:]
        table = np.empty((len(rows), len(self.numeric)))
        if self.numeric and rows:
            try:  # validated rows have every feature
                values = row_values(rows, self.numeric)
                table = np.array(values, dtype=float).reshape(len(rows), len(self.numeric))
            except (KeyError, TypeError, ValueError, OverflowError):  # as `drift.encode` does it:
                for j, f in enumerate(self.numeric):  # NaN for what is not a representable number
                    table[:, j] = encode(self.columns[f], [row.get(f) for row in rows])
        others = {
            name: encode(
                self.columns[name], predictions if name == PREDICTION else [row.get(name) for row in rows]
            )
            for name in self.others
        }
        return table, others

    def append(self, encoded: Encoded, rows: int) -> None:
        """Store the `encode`d columns of a batch of `rows` rows."""
        keep = min(rows, self.capacity)
        if keep == 0:
            return
        first = (self.position + rows - keep) % self.capacity
        at: slice | np.ndarray = (  # a slice when the batch does not wrap (cheaper to write)
            slice(first, first + keep)
            if first + keep <= self.capacity
            else (first + np.arange(keep)) % self.capacity
        )
        table, others = encoded
        self.matrix[at] = table
        for name, values in others.items():
            self.arrays[name][at] = values
        self.position = (self.position + rows) % self.capacity
        self.size = min(self.size + rows, self.capacity)

    def snapshot(self) -> dict[str, np.ndarray]:
        """A copy of each column's rows held (the first `size` slots: they fill from 0 before
        wrapping)."""
        return {name: a[: self.size].copy() for name, a in self.arrays.items()}


class DriftMonitor:
    """Appends are O(rows) array writes under a lock; `compute()` runs in a background thread."""

    def __init__(
        self,
        model: str,
        version: str,
        profile: dict[str, Any] | None,
        window: int = 1000,
        min_samples: int = 100,
        method: str = "psi",
        max_bytes: int = DEFAULT_WINDOW_BYTES,
    ) -> None:
        self.model, self.version = model, version
        self.profile = profile or {}
        self.features = list(self.profile.get("features", {}))
        columns = dict(self.profile.get("features", {}))
        if self.profile.get("prediction"):
            columns[PREDICTION] = self.profile["prediction"]
        self.window = DriftWindow(columns, window, max_bytes)
        self.min_samples = min_samples
        self.method = method
        self.lock = threading.Lock()
        self.seen = 0
        self.last: dict[str, dict[str, float]] = {}

    def observe(self, rows: list[dict[str, Any]], predictions: list[Any]) -> None:
        encoded = self.window.encode(rows, predictions)  # outside the lock: compute() may hold it
        with self.lock:
            self.window.append(encoded, len(rows))
            self.seen += len(rows)

    def compute(self) -> float | None:
        """Update the gauges; the drift score, or None below `min_samples`."""
        with self.lock:
            snapshot = self.window.snapshot()
            size = self.window.size
        WINDOW_SIZE.labels(self.model).set(size)
        if size < self.min_samples or not self.features:
            return None
        stats = {name: encoded_drift(self.window.columns[name], a) for name, a in snapshot.items()}
        for feature, by_method in stats.items():
            for method, value in by_method.items():
                FEATURE_DRIFT.labels(self.model, self.version, feature, method).set(value)
        score = max(
            (m.get(self.method, m.get("psi", 0.0)) for f, m in stats.items() if f != PREDICTION),
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
    ProcessCollector(registry=registry)
    return registry
