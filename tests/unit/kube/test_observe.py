"""What the operator reads from a Job and its Pods (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.kube.observe import observe_job, termination_message

T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def job(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "r-s", "creationTimestamp": T1, "annotations": {"conveyor.dev/cache-key": "k"}},
        "status": status,
    }


def pod(message: str, code: int, at: str) -> dict[str, Any]:
    return {
        "status": {
            "containerStatuses": [
                {
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "message": message,
                            "finishedAt": at,
                            "reason": "Error",
                        }
                    }
                }
            ]
        }
    }


CASES = [
    ("just created", {}, [], ("Running", 1, "")),
    ("active", {"active": 1, "startTime": T1}, [], ("Running", 1, "")),
    ("retrying", {"active": 1, "failed": 2}, [], ("Running", 3, "")),
    (
        "complete",
        {
            "succeeded": 1,
            "failed": 1,
            "completionTime": T2,
            "conditions": [{"type": "Complete", "status": "True"}],
        },
        [],
        ("Succeeded", 2, ""),
    ),
    (
        "failed with message",
        {"failed": 2, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
        [pod("old", 1, T1), pod("disk full", 1, T2)],
        ("Failed", 2, "disk full"),
    ),
    (
        "failed without message",
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
        [pod("", 137, T1)],
        ("Failed", 1, "exited with code 137 (Error)"),
    ),
    (
        "deadline",
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
        [],
        ("Failed", 1, "timed out after 30s"),
    ),
    (
        "condition not true yet",
        {"active": 1, "conditions": [{"type": "Failed", "status": "False"}]},
        [],
        ("Running", 1, ""),
    ),
    (
        "every attempt hit the pod's deadline",
        {"failed": 2, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
        [
            {
                "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
                "status": {"phase": "Failed", "reason": "DeadlineExceeded"},
            },
            {
                "metadata": {"creationTimestamp": "2026-01-01T00:00:40Z"},
                "status": {"phase": "Failed", "reason": "DeadlineExceeded"},
            },
        ],
        ("Failed", 2, "timed out after 30s"),
    ),
    (
        "the last attempt failed on its own after an earlier one timed out",
        {"failed": 2, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
        [
            {
                "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
                "status": {"phase": "Failed", "reason": "DeadlineExceeded"},
            },
            {
                "metadata": {"creationTimestamp": "2026-01-01T00:00:40Z"},
                "status": {
                    "phase": "Failed",
                    "containerStatuses": [{"state": {"terminated": {"exitCode": 1, "message": "boom"}}}],
                },
            },
        ],
        ("Failed", 2, "boom"),
    ),
]


@pytest.mark.parametrize(("status", "pods", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_observe_job(
    status: dict[str, Any], pods: list[dict[str, Any]], expected: tuple[str, int, str]
) -> None:
    facts = observe_job(job(status), pods, timeout_seconds=30)
    assert (facts.phase, facts.attempts, facts.message) == expected
    assert facts.cache_key == "k"
    assert facts.start_time is not None


def test_termination_message_of_no_pods() -> None:
    assert termination_message([]) == ""
