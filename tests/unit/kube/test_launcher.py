"""Whose Job is it when a stage's Job name is taken: table-driven over `name_taken`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.api.common import API_VERSION
from conveyor.kube.launcher import name_taken
from conveyor.kube.manifests import Owner

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = Owner("PipelineRun", "r", "uid-now", "ns")


def job(uid: str | None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    refs = [{"apiVersion": API_VERSION, "kind": "PipelineRun", "name": "r", "uid": uid, "controller": True}]
    return {
        "metadata": {"name": "r-s", "ownerReferences": refs if uid else []},
        "status": status or {"active": 1, "startTime": "2026-01-01T00:00:00Z"},
    }


FAILED = {
    "failed": 2,
    "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}],
}

CASES = [
    ("this run's Job, running", job("uid-now"), "Running", ""),
    ("this run's Job, failed", job("uid-now", FAILED), "Failed", ""),
    ("an earlier run object's Job", job("uid-before"), "Pending", "an earlier PipelineRun 'r'"),
    ("a Job of another owner", job(None), "Pending", "another owner"),
    ("gone by the time it was read", None, "Pending", "another owner"),
]


@pytest.mark.parametrize(("found", "phase", "said"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_name_taken(found: dict[str, Any] | None, phase: str, said: str) -> None:
    st = name_taken(found, OWNER, "s", T0, "key")
    assert st.phase == phase
    assert said in st.message
    if phase == "Pending":
        assert "the stage starts when it is deleted" in st.message and st.attempts == 0
    else:
        assert st.cache_key == "key"
