"""The live-quality window (serving/quality.py) and feedback parsing, without a server: ids
expire first in, first out within a fixed capacity; a label is taken once; the metrics equal
scikit-learn's over the same pairs; a regressor's labels must be numbers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

from conveyor.serving.model import BadInput
from conveyor.serving.protocol import parse_feedback
from conveyor.serving.quality import (
    KEY_CHARS,
    Pending,
    QualityMonitor,
    classification_quality,
    key,
    prediction_ids,
    regression_quality,
)


def test_pending_expires_the_oldest_id_and_replaces_a_repeated_one() -> None:
    pending = Pending(3, np.float64)
    pending.add(["a", "b", "c"], np.array([1.0, 2.0, 3.0]))
    pending.add(["d"], np.array([4.0]))  # "a" expires
    assert pending.take("a") is None and len(pending) == 3
    pending.add(["b"], np.array([20.0]))  # "b" again: its new prediction, one entry
    assert len(pending) == 3  # c, d, b
    assert pending.take("b") == 20.0 and pending.take("b") is None  # taken once
    pending.add(["e", "f"], np.array([5.0, 6.0]))  # the last 3 predictions made: b, e, f
    assert [pending.take(k) for k in "cdef"] == [None, None, 5.0, 6.0]
    assert len(pending.slots) == 0 and pending.keys.count(None) == 3


def test_a_zero_capacity_remembers_nothing() -> None:
    pending = Pending(0, np.int32)
    pending.add(["a"], np.array([1]))
    assert pending.take("a") is None


def test_long_ids_are_kept_as_a_digest_of_bounded_size() -> None:
    long = "x" * 10_000
    assert key("short") == "short" and len(key(long)) == 33 and key(long) != key(long + "y")
    assert len(key("y" * KEY_CHARS)) == KEY_CHARS


@pytest.mark.parametrize(
    ("rows", "ids"), [(1, ["r"]), (3, ["r:0", "r:1", "r:2"])], ids=["one-row", "several"]
)
def test_prediction_ids(rows: int, ids: list[str]) -> None:
    assert prediction_ids("r", rows) == ids


@pytest.mark.parametrize("classes", [2, 3], ids=["binary", "multiclass"])
def test_classification_quality_is_scikit_learns(classes: int) -> None:
    rng = np.random.default_rng(classes)
    truth = rng.integers(0, classes, 300)
    predicted = np.where(rng.random(300) < 0.7, truth, rng.integers(0, classes, 300))
    got = classification_quality(predicted, truth, classes)
    average = "binary" if classes == 2 else "macro"
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert got["f1"] == pytest.approx(f1_score(truth, predicted, average=average))


def test_regression_quality_is_scikit_learns() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=200)
    predicted = truth + rng.normal(scale=0.3, size=200)
    got = regression_quality(predicted, truth)
    assert got["rmse"] == pytest.approx(mean_squared_error(truth, predicted) ** 0.5)
    assert got["mae"] == pytest.approx(mean_absolute_error(truth, predicted))


def test_the_monitor_computes_over_the_last_window_of_labels() -> None:
    monitor = QualityMonitor("m-unit", "v1", ["no", "yes"], pending=100, window=4)
    monitor.observe(["a", "b", "c", "d", "e", "f"], ["yes", "no", "yes", "yes", "no", "no"])
    assert monitor.compute() == {}  # no labels yet
    result = monitor.label(["a", "b", "zz", "a"], ["yes", "yes", "no", "no"])
    assert (result.accepted, result.unknown) == (2, ["zz", "a"])
    monitor.label(["c", "d", "e", "f"], ["no", "no", "no", "no"])  # a, b fall out of the window
    assert monitor.compute()["accuracy"] == 0.5  # c, d wrong; e, f right
    assert monitor.metrics == ("accuracy", "f1")


def test_a_regressors_labels_are_numbers() -> None:
    body = parse_feedback({"ids": ["a", "b"], "values": [1, 2.5]}, [], 10)
    assert body.values == [1, 2.5]
    for bad in ("1.0", True, None, [1]):
        with pytest.raises(BadInput, match=r"values\[0\] is .* this model is a regressor"):
            parse_feedback({"ids": ["a"], "values": [bad]}, [], 10)


def test_a_classifiers_labels_are_its_classes_by_type() -> None:
    assert parse_feedback({"ids": ["a"], "values": ["yes"]}, ["no", "yes"], 10).values == ["yes"]
    says = r"values\[0\] is 'maybe', not one of the model's classes \('no', 'yes'\)"
    with pytest.raises(BadInput, match=says):
        parse_feedback({"ids": ["a"], "values": ["maybe"]}, ["no", "yes"], 10)
    with pytest.raises(BadInput, match="not one of the model's classes"):
        parse_feedback({"ids": ["a"], "values": [1.0]}, [0, 1], 10)


def test_numpy_classes_take_plain_json_labels() -> None:
    """scikit-learn's `classes_` are numpy scalars; JSON labels are plain values."""
    classes = list(np.array([0, 1]))
    assert parse_feedback({"ids": ["a"], "values": [1]}, classes, 10).values == [1]
    monitor = QualityMonitor("m-numpy", "v1", classes, pending=10, window=10)
    monitor.observe(["a", "b"], [1, 0])
    assert monitor.label(["a", "b"], [1, 1]).accepted == 2
    assert monitor.compute()["accuracy"] == 0.5


def test_request_ids_are_unique_and_a_forked_worker_draws_its_own_prefix() -> None:
    import os

    from conveyor.serving.quality import new_request_id

    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and len({i.split("-")[0] for i in ids}) == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a --workers child: its ids must not repeat the parent's
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    assert child.split("-")[0] != next(iter(ids)).split("-")[0]
