"""Live quality from ground truth: which prediction each id names, the labels sent for them,
and the quality of the last labelled predictions, off the request path.

Every prediction gets an id (`prediction_ids`). The server remembers the last
`--feedback-window` predictions by id (`Pending`: a fixed ring, so no request can grow it;
the oldest id expires first); a label sent later (`POST .../feedback`) takes its prediction
out and puts the (prediction, truth) pair in the labelled window (`Labelled`: the last
`--quality-window` pairs). `QualityMonitor.compute()` turns that window into gauges: accuracy
and F1 for a classifier, RMSE and MAE for a regressor, and the number of labelled pairs they
were computed from, which the operator weighs pods by and compares with `minSamples`.

A classifier's predictions and labels are stored as the index of their class (-1 for a value
that is not one of the model's classes: the protocol layer refuses such labels), a regressor's
as float64. An id is kept as itself up to `KEY_CHARS` characters, else as a digest of it, so a
client-chosen V2 request id of any length costs the same bounded memory.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge

from conveyor.serving.monitor import REGISTRY

QUALITY = Gauge(
    "conveyor_model_quality",
    "Live quality over the labelled window: accuracy and f1 (classifiers), rmse and mae (regressors).",
    ["model", "version", "metric"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",  # the newest labelled window of any live worker
)
QUALITY_SAMPLES = Gauge(
    "conveyor_quality_samples",
    "Labelled predictions the live quality is computed from.",
    ["model", "version"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",  # the samples behind that value
)
FEEDBACK = Counter(
    "conveyor_feedback_total",
    "Labels for earlier predictions: accepted, or unknown (never seen, expired, labelled already).",
    ["model", "outcome"],
    registry=REGISTRY,
)
KEY_CHARS = 64
CLASSIFIER_METRICS = ("accuracy", "f1")
REGRESSOR_METRICS = ("rmse", "mae")


def new_request_id() -> str:
    """A fresh id: 64 random bits drawn once per process, then a counter (a uuid4 per request
    cost a system call and an object)."""
    return f"{_ids.prefix}{next(_ids.counter):x}"


class _Ids:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix, self.counter = secrets.token_hex(8) + "-", itertools.count()


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reset)  # --workers: each worker draws its own prefix


def prediction_ids(request_id: str, rows: int) -> list[str]:
    """The ids of a response's predictions: the response's id when it holds one row, else the
    id followed by `:<row>` (0-based) for each."""
    if rows == 1:
        return [request_id]
    return [f"{request_id}:{i}" for i in range(rows)]


def key(prediction_id: str) -> str:
    """What the window keeps for an id: itself, or a digest of a long one."""
    if len(prediction_id) <= KEY_CHARS:
        return prediction_id
    return "#" + hashlib.blake2b(prediction_id.encode(), digest_size=16).hexdigest()


class Pending:
    """The last `capacity` predictions by id, in a ring: a new id past the capacity expires the
    oldest; an id predicted again replaces its earlier prediction."""

    def __init__(self, capacity: int, dtype: Any) -> None:
        self.capacity = max(0, capacity)
        self.slots: dict[str, int] = {}
        self.keys: list[str | None] = [None] * self.capacity
        self.values = np.zeros(self.capacity, dtype)
        self.position = 0

    def add(self, keys: Sequence[str], values: np.ndarray) -> None:
        if self.capacity == 0:
            return
        for k, value in zip(keys, values, strict=True):
            old = self.slots.pop(k, None)
            if old is not None:
                self.keys[old] = None
            evicted = self.keys[self.position]
            if evicted is not None:
                del self.slots[evicted]
            self.keys[self.position] = k
            self.values[self.position] = value
            self.slots[k] = self.position
            self.position = (self.position + 1) % self.capacity

    def take(self, k: str) -> Any | None:
        """The prediction of this id, forgotten (a label is taken once); None if unknown."""
        slot = self.slots.pop(k, None)
        if slot is None:
            return None
        self.keys[slot] = None
        return self.values[slot]

    def __len__(self) -> int:
        return len(self.slots)


class Labelled:
    """The last `capacity` (prediction, truth) pairs."""

    def __init__(self, capacity: int, dtype: Any) -> None:
        self.capacity = max(0, capacity)
        self.predicted = np.zeros(self.capacity, dtype)
        self.truth = np.zeros(self.capacity, dtype)
        self.position = 0
        self.size = 0

    def append(self, predicted: Any, truth: Any) -> None:
        if self.capacity == 0:
            return
        self.predicted[self.position] = predicted
        self.truth[self.position] = truth
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.predicted[: self.size].copy(), self.truth[: self.size].copy()


@dataclass(frozen=True)
class FeedbackResult:
    accepted: int
    unknown: list[str] = field(default_factory=list)


def classification_quality(predicted: np.ndarray, truth: np.ndarray, classes: int) -> dict[str, float]:
    """Accuracy, and F1: of the positive class (the second one) for two classes, as
    scikit-learn's `f1_score` does for labels {0, 1}; else the mean over the classes seen in
    the truth or the predictions (`average="macro"`). A class never predicted nor true has no
    F1 and is left out; one with no true positives scores 0."""
    accuracy = float(np.mean(predicted == truth))
    if classes == 2:
        labels = [1]
    else:
        labels = sorted((set(np.unique(truth).tolist()) | set(np.unique(predicted).tolist())) - {-1})
    scores = []
    for c in labels:
        tp = float(np.sum((predicted == c) & (truth == c)))
        fp = float(np.sum((predicted == c) & (truth != c)))
        fn = float(np.sum((predicted != c) & (truth == c)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": accuracy, "f1": float(np.mean(scores)) if scores else 0.0}


def regression_quality(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    errors = predicted - truth
    return {"rmse": float(np.sqrt(np.mean(errors**2))), "mae": float(np.mean(np.abs(errors)))}


class QualityMonitor:
    """Remembers predictions, takes labels, computes the quality gauges (in a background
    thread, as the drift monitor does). `classes` empty: a regressor."""

    def __init__(
        self, model: str, version: str, classes: Sequence[Any], pending: int = 10000, window: int = 1000
    ) -> None:
        self.model, self.version = model, version
        self.classes = [c.item() if hasattr(c, "item") else c for c in classes]  # numpy: plain
        self.index = {c: i for i, c in enumerate(self.classes)}
        dtype = np.int32 if self.classes else np.float64
        self.pending = Pending(pending, dtype)
        self.labelled = Labelled(window, dtype)
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}

    @property
    def metrics(self) -> tuple[str, ...]:
        return CLASSIFIER_METRICS if self.classes else REGRESSOR_METRICS

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        if self.classes:
            return np.fromiter((self.index.get(v, -1) for v in values), np.int32, len(values))
        return np.asarray(values, dtype=np.float64)

    def observe(self, ids: Sequence[str], predictions: Sequence[Any]) -> None:
        keys = [key(i) for i in ids]
        encoded = self.encode(predictions)
        with self.lock:
            self.pending.add(keys, encoded)

    def label(self, ids: Sequence[str], truths: Sequence[Any]) -> FeedbackResult:
        """Record a label for each known id; the unknown ones are reported, nothing else."""
        encoded = self.encode(truths)
        unknown = []
        with self.lock:
            for prediction_id, truth in zip(ids, encoded, strict=True):
                predicted = self.pending.take(key(prediction_id))
                if predicted is None:
                    unknown.append(prediction_id)
                else:
                    self.labelled.append(predicted, truth)
        accepted = len(ids) - len(unknown)
        FEEDBACK.labels(self.model, "accepted").inc(accepted)
        FEEDBACK.labels(self.model, "unknown").inc(len(unknown))
        return FeedbackResult(accepted, unknown)

    def compute(self) -> dict[str, float]:
        """Update the gauges; the metrics (none before the first label)."""
        with self.lock:
            predicted, truth = self.labelled.pairs()
        QUALITY_SAMPLES.labels(self.model, self.version).set(len(truth))
        if len(truth) == 0:
            return {}
        if self.classes:
            values = classification_quality(predicted, truth, len(self.classes))
        else:
            values = regression_quality(predicted, truth)
        for metric, value in values.items():
            QUALITY.labels(self.model, self.version, metric).set(value)
        self.last = values
        return values
