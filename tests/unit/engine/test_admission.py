"""Admission under maxConcurrentRuns (table-driven): who starts, who waits, what the queue gauge
and the waiting message say."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.engine.admission import Admission, RunSummary, admit


def r(
    name: str,
    phase: str = "Pending",
    created: str = "2026-01-01T10:00:00Z",
    pipeline: str | None = "p",
    cancelled: bool = False,
) -> RunSummary:
    return RunSummary(name, pipeline, phase, cancelled, created, "")


def at(minute: int) -> str:
    return f"2026-01-01T10:{minute:02d}:00Z"


def waiting(running: int, limit: int, ahead: int, pipeline: str = "p") -> str:
    return f"waiting: {running} of at most {limit} runs of {pipeline!r} are running; {ahead} ahead"


# id, runs observed, maxConcurrentRuns, the run asking, expected
CASES: list[tuple[str, list[RunSummary], int | None, str, Admission]] = [
    (
        "no limit: admitted whatever runs",
        [r("r0", "Running"), r("r1", "Running"), r("me", created=at(5))],
        None,
        "me",
        Admission(True, 0, ""),
    ),
    (
        "a free slot",
        [r("r0", "Running"), r("me", created=at(5))],
        2,
        "me",
        Admission(True, 0, ""),
    ),
    (
        "full: waits, first in line",
        [r("r0", "Running"), r("me", created=at(5))],
        1,
        "me",
        Admission(False, 1, waiting(1, 1, 1)),
    ),
    (
        "queue position: third of three waiting",
        [r("r0", "Running"), r("w1", created=at(1)), r("w2", created=at(2)), r("me", created=at(3))],
        1,
        "me",
        Admission(False, 3, waiting(1, 1, 3)),
    ),
    (
        "one slot free but an older run is first",
        [r("r0", "Running"), r("w1", created=at(1)), r("me", created=at(2))],
        2,
        "me",
        Admission(False, 1, waiting(1, 2, 1)),
    ),
    (
        "the oldest waiting run takes the free slot",
        [r("r0", "Running"), r("me", created=at(1)), r("w2", created=at(2))],
        2,
        "me",
        Admission(True, 1, ""),
    ),
    (
        "cancelled Pending runs do not queue",
        [r("old", created=at(0), cancelled=True), r("me", created=at(5))],
        1,
        "me",
        Admission(True, 0, ""),
    ),
    (
        "finished runs hold no slot",
        [r("done", "Succeeded"), r("failed", "Failed"), r("me", created=at(5))],
        1,
        "me",
        Admission(True, 0, ""),
    ),
    (
        "other pipelines' and inline runs are ignored",
        [
            r("q0", "Running", pipeline="q"),
            r("q1", created=at(0), pipeline="q"),
            r("inline", "Running", pipeline=None),
            r("me", created=at(5)),
        ],
        1,
        "me",
        Admission(True, 0, ""),
    ),
    (
        "ordered by creationTimestamp before name",
        [r("a", created=at(2)), r("b", created=at(1))],
        1,
        "a",
        Admission(False, 1, waiting(0, 1, 1)),
    ),
    (
        "ties on creationTimestamp broken by name: first",
        [r("b"), r("a")],
        1,
        "a",
        Admission(True, 1, ""),
    ),
    (
        "ties on creationTimestamp broken by name: second",
        [r("b"), r("a")],
        1,
        "b",
        Admission(False, 1, waiting(0, 1, 1)),
    ),
    (
        "a run missing from a stale list counts as first",
        [r("w1", created=at(1))],
        1,
        "me",
        Admission(True, 0, ""),
    ),
    (
        "more running than the limit (it was lowered): waits",
        [r("r0", "Running"), r("r1", "Running"), r("me", created=at(5))],
        1,
        "me",
        Admission(False, 1, waiting(2, 1, 2)),
    ),
]


@pytest.mark.parametrize(
    ("runs", "limit", "run", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_admit(runs: list[RunSummary], limit: int | None, run: str, expected: Admission) -> None:
    assert admit(run, runs, limit, "p") == expected


BODIES: list[tuple[str, dict[str, Any], RunSummary]] = [
    (
        "a full body",
        {
            "metadata": {"name": "r", "creationTimestamp": at(1)},
            "spec": {"pipelineRef": {"name": "p"}, "cancelled": True},
            "status": {"phase": "Succeeded", "completionTime": at(9)},
        },
        RunSummary("r", "p", "Succeeded", True, at(1), at(9)),
    ),
    (
        "no status yet: Pending",
        {"metadata": {"name": "r"}, "spec": {"pipelineRef": {"name": "p"}}},
        RunSummary("r", "p", "Pending", False, "", ""),
    ),
    (
        "a status without a phase: Pending",
        {"metadata": {"name": "r"}, "spec": {"pipelineRef": {"name": "p"}}, "status": {"phase": None}},
        RunSummary("r", "p", "Pending", False, "", ""),
    ),
    (
        "an inline pipelineSpec: no pipeline",
        {"metadata": {"name": "r"}, "spec": {"pipelineSpec": {"stages": []}}},
        RunSummary("r", None, "Pending", False, "", ""),
    ),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in BODIES], ids=[c[0] for c in BODIES])
def test_run_summary_from_body(body: dict[str, Any], expected: RunSummary) -> None:
    assert RunSummary.from_body(body) == expected
