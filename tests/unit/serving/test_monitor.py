"""The drift window: fixed numpy ring buffers, bounded in bytes, with the same statistics as
the values it replaced; process metrics, and one series per gauge with several workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor.drift import feature_drift
from conveyor.serving import monitor
from conveyor.serving.monitor import PREDICTION, DriftMonitor
from conveyor.stages.profile import categorical_profile, numeric_profile

RNG = np.random.default_rng(1)
PROFILE: dict[str, Any] = {
    "features": {
        "x": numeric_profile(RNG.normal(0, 1, 2000), bins=10),
        "y": numeric_profile(RNG.normal(5, 2, 2000), bins=10),
        "colour": categorical_profile(pd.Series(["red"] * 50 + ["green"] * 30 + ["blue"] * 20)),
    },
    "prediction": categorical_profile(pd.Series([0] * 60 + [1] * 40)),
}
ROW_BYTES = 8 + 8 + 1 + 1  # two float64, two int8 codes


def rows(n: int, colour: str | None = None) -> list[dict[str, Any]]:
    colours = ["red", "green", "blue", "purple", None]
    return [
        {
            "x": float(RNG.normal(0.3, 1)),
            "y": None if i % 17 == 0 else float(RNG.normal(5, 2)),
            "colour": colour if colour is not None else colours[int(RNG.integers(0, 5))],
        }
        for i in range(n)
    ]


def test_window_bytes_are_fixed_whatever_the_values() -> None:
    monitor = DriftMonitor("m", "1", PROFILE, window=1000)
    assert monitor.window.nbytes == 1000 * ROW_BYTES
    huge = "z" * 100_000  # a categorical value of 100 kB is stored as one byte
    for _ in range(50):
        batch = rows(100, colour=huge)
        monitor.observe(batch, [0] * len(batch))
    assert monitor.window.nbytes == 1000 * ROW_BYTES
    assert monitor.window.size == 1000 and monitor.seen == 5000


@pytest.mark.parametrize(
    ("window", "max_bytes", "capacity"),
    [
        (1000, 1 << 20, 1000),
        (10**9, 1 << 20, (1 << 20) // ROW_BYTES),
        (1000, 10 * ROW_BYTES, 10),
        (1000, ROW_BYTES - 1, 0),
    ],
    ids=["under-the-bound", "huge-window-bounded", "small-bound", "bound-below-one-row"],
)
def test_byte_bound_caps_the_rows(window: int, max_bytes: int, capacity: int) -> None:
    monitor = DriftMonitor("m", "1", PROFILE, window=window, max_bytes=max_bytes)
    assert monitor.window.capacity == capacity
    assert monitor.window.nbytes == capacity * ROW_BYTES <= max_bytes
    batch = rows(30)
    monitor.observe(batch, [1] * 30)  # never fails, even with no room
    assert monitor.window.size == min(30, capacity)


@pytest.mark.parametrize("batch", [1, 7, 250, 1000, 2500], ids=lambda b: f"batch-{b}")
def test_statistics_equal_those_of_the_last_rows(batch: int) -> None:
    """The window's statistics equal those of the last `window` values kept as a list."""
    window = 1000
    monitor = DriftMonitor("m", "1", PROFILE, window=window, min_samples=10)
    kept: dict[str, deque[Any]] = {f: deque(maxlen=window) for f in [*PROFILE["features"], PREDICTION]}
    for _ in range(3000 // batch + 1):
        part = rows(batch)
        preds = [int(RNG.integers(0, 3)) for _ in part]  # 2 is a class the profile never saw
        monitor.observe(part, preds)
        for f in PROFILE["features"]:
            kept[f].extend(r[f] for r in part)
        kept[PREDICTION].extend(preds)
    assert monitor.compute() is not None
    profiles = {**PROFILE["features"], PREDICTION: PROFILE["prediction"]}
    expected = {f: feature_drift(profiles[f], list(values)) for f, values in kept.items()}
    assert monitor.last.keys() == expected.keys()
    for f, stats in expected.items():
        assert monitor.last[f] == pytest.approx(stats, rel=1e-12, abs=1e-12), f


def test_unrepresentable_numbers_are_missing() -> None:
    monitor = DriftMonitor("m", "1", PROFILE, window=10, min_samples=1)
    monitor.observe([{"x": 10**400, "y": "not a number", "colour": ["a", "list"]}], [0])
    assert np.isnan(monitor.window.arrays["x"][0]) and np.isnan(monitor.window.arrays["y"][0])
    assert monitor.compute() is not None


def test_no_profile_counts_rows_only() -> None:
    monitor = DriftMonitor("m", "1", None, window=5)
    monitor.observe(rows(8), [0] * 8)
    assert monitor.window.nbytes == 0 and monitor.window.size == 5
    assert monitor.compute() is None


def test_the_server_exports_its_process_metrics() -> None:
    from prometheus_client import generate_latest

    text = generate_latest(monitor.REGISTRY).decode()
    assert "process_resident_memory_bytes " in text and "process_cpu_seconds_total " in text


MULTIPROCESS = """
import os, sys
from prometheus_client import generate_latest
from conveyor.serving import monitor, quality
def write(value):
    monitor.DRIFT_SCORE.labels("m", "1").set(value)
    monitor.WINDOW_SIZE.labels("m").set(10)
    quality.QUALITY.labels("m", "1", "accuracy").set(value)
pid = os.fork()  # a second worker, as `conveyor serve --workers 2` forks them
if pid == 0:
    write(0.5)
    os._exit(0)
os.waitpid(pid, 0)
write(0.25)
sys.stdout.write(generate_latest(monitor.exposition_registry()).decode())
"""


def test_several_workers_give_one_series_per_gauge_not_one_per_pid(tmp_path: Path) -> None:
    """With --workers > 1 gauges got a `pid` label each (prometheus_client's default "all"):
    alerts on conveyor_drift_score then saw one series per worker, stale ones included."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", MULTIPROCESS], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if not line.startswith("#")]
    assert not [line for line in lines if 'pid="' in line]
    assert 'conveyor_drift_score{model="m",version="1"} 0.5' in lines  # the worst worker's
    assert 'conveyor_model_quality{metric="accuracy",model="m",version="1"} 0.25' in lines  # newest
    assert 'conveyor_drift_window_size{model="m"} 20.0' in lines  # both workers' rows
    assert any(line.startswith("process_resident_memory_bytes ") for line in lines)


@pytest.mark.parametrize(
    "batches",
    [[2, 2], [2, 2, 2], [4, 3, 1], [7], [3, 9, 1], [5, 5, 5]],
    ids=["fits", "wraps", "wraps-then-fills", "over-capacity", "over-after-some", "exact-multiples"],
)
def test_the_window_holds_the_last_rows_appended(batches: list[int]) -> None:
    """Contiguous batches are written as slices, wrapping ones by index: either way the window
    holds exactly the newest `capacity` rows (in slot order; drift does not depend on order)."""
    monitor = DriftMonitor("m", "1", PROFILE, window=5)
    appended: list[float] = []
    for n in batches:
        batch = [
            {"x": float(len(appended) + i), "y": -float(len(appended) + i), "colour": "red"} for i in range(n)
        ]
        appended += [row["x"] for row in batch]
        monitor.observe(batch, [0] * n)
    held = monitor.window.snapshot()
    assert sorted(held["x"].tolist()) == appended[-5:]
    assert (held["y"] == -held["x"]).all()  # each slot holds one row's values
