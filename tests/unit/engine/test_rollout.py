"""Reading a model server's rollout from the status a real Deployment controller writes, and
what to serve when it fails (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.engine.rollout import ModelRef, Rollout, plan_rollout, read_rollout

KEY = "conveyor.dev/model-sha256"
A = ModelRef("s3://b/ns/p/r1/train/model.skops", "sha-a", "r1")
B = ModelRef("s3://b/ns/p/r2/train/model.skops", "sha-b", "r2")
C = ModelRef("s3://b/ns/p/r3/train/model.skops", "sha-c", "r3")

AVAILABLE = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
UPDATED = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
DONE = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
DEADLINE = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "m-5d4f" has timed out progressing.',
}


def deployment(
    model: ModelRef,
    *,
    generation: int = 2,
    observed: int = 2,
    spec: int = 2,
    replicas: int = 2,
    updated: int = 2,
    available: int = 2,
    progressing: dict[str, Any] = DONE,
) -> dict[str, Any]:
    """A Deployment as the API server returns it; zero counts are omitted, as the controller does."""
    counts = {
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": available,
        "availableReplicas": available,
    }
    return {
        "metadata": {"name": "m", "generation": generation},
        "spec": {
            "replicas": spec,
            "template": {"metadata": {"annotations": {KEY: model.sha256}}},
        },
        "status": {
            "observedGeneration": observed,
            **{k: v for k, v in counts.items() if v},
            "conditions": [AVAILABLE, progressing],
        },
    }


def read(dep: dict[str, Any]) -> Rollout:
    return read_rollout(dep, KEY)


# name, deployment (None: none yet), target, last good, failed model, desired replicas,
# expected: (serve, update, good, failed, Progressing (status, reason), Ready status)
CASES: list[tuple[Any, ...]] = [
    (
        "no deployment yet",
        None,
        B,
        None,
        None,
        2,
        (B, True, None, None, ("True", "RollingOut"), "False"),
    ),
    (
        "a new model: the Deployment is patched",
        deployment(A),
        B,
        A,
        None,
        2,
        (B, True, None, None, ("True", "RollingOut"), "True"),
    ),
    (
        "right after the spec change: the old generation's numbers, all available",
        deployment(B, generation=3, observed=2, progressing=DONE),
        B,
        A,
        None,
        2,
        (B, False, None, None, ("True", "RollingOut"), "True"),
    ),
    (
        "partial rollout: fewer updated replicas than wanted",
        deployment(B, spec=3, replicas=4, updated=2, available=3, progressing=UPDATED),
        B,
        A,
        None,
        3,
        (B, False, None, None, ("True", "RollingOut"), "True"),
    ),
    (
        "old replicas still present (and ready)",
        deployment(B, spec=1, replicas=2, updated=1, available=1, progressing=UPDATED),
        B,
        A,
        None,
        1,
        (B, False, None, None, ("True", "RollingOut"), "True"),
    ),
    (
        "updated replicas not yet available",
        deployment(B, spec=2, replicas=2, updated=2, available=1, progressing=UPDATED),
        B,
        A,
        None,
        2,
        (B, False, None, None, ("True", "RollingOut"), "True"),
    ),
    (
        "complete",
        deployment(B),
        B,
        A,
        None,
        2,
        (B, False, B, None, ("False", "Succeeded"), "True"),
    ),
    (
        "complete at zero replicas",
        deployment(B, spec=0, replicas=0, updated=0, available=0),
        B,
        None,
        None,
        0,
        (B, False, B, None, ("False", "Succeeded"), "True"),
    ),
    (
        "replicas changed: the Deployment is patched first",
        deployment(B),
        B,
        B,
        None,
        3,
        (B, True, None, None, ("True", "RollingOut"), "True"),
    ),
    (
        "deadline exceeded, another last good model: roll back to it",
        deployment(B, spec=1, replicas=2, updated=1, available=1, progressing=DEADLINE),
        B,
        A,
        None,
        1,
        (A, True, None, "sha-b", ("False", "RolloutFailed"), "True"),
    ),
    (
        "deadline exceeded, no good model yet: no rollback",
        deployment(B, spec=1, replicas=1, updated=1, available=0, progressing=DEADLINE),
        B,
        None,
        None,
        1,
        (B, False, None, "sha-b", ("False", "RolloutFailed"), "False"),
    ),
    (
        "deadline exceeded, the failing model is the last good one: no rollback",
        deployment(B, spec=1, replicas=2, updated=1, available=1, progressing=DEADLINE),
        B,
        B,
        None,
        1,
        (B, False, None, "sha-b", ("False", "RolloutFailed"), "True"),
    ),
    (
        "rolled back: the old generation's deadline is not the new one's",
        deployment(
            A, generation=4, observed=3, spec=1, replicas=2, updated=1, available=1, progressing=DEADLINE
        ),
        B,
        A,
        "sha-b",
        1,
        (A, False, None, "sha-b", ("False", "RolloutFailed"), "True"),
    ),
    (
        "rolled back, observed: the controller keeps the deadline until the failed pods are gone",
        deployment(
            A, generation=4, observed=4, spec=1, replicas=2, updated=1, available=1, progressing=DEADLINE
        ),
        B,
        A,
        "sha-b",
        1,
        (A, False, None, "sha-b", ("False", "RolloutFailed"), "True"),
    ),
    (
        "rollback complete: the failed model stays failed, the good one is served",
        deployment(A, spec=1, replicas=1, updated=1, available=1),
        B,
        A,
        "sha-b",
        1,
        (A, False, A, "sha-b", ("False", "RolloutFailed"), "True"),
    ),
    (
        "a newer model after a failed one is rolled out",
        deployment(A, spec=1, replicas=1, updated=1, available=1),
        C,
        A,
        "sha-b",
        1,
        (C, True, None, "sha-b", ("True", "RollingOut"), "True"),
    ),
    (
        "a failed model that became ready after all is good",
        deployment(B, spec=1, replicas=1, updated=1, available=1),
        B,
        None,
        "sha-b",
        1,
        (B, False, B, None, ("False", "Succeeded"), "True"),
    ),
]


@pytest.mark.parametrize(
    ("dep", "target", "good", "failed", "replicas", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_plan_rollout(
    dep: dict[str, Any] | None,
    target: ModelRef,
    good: ModelRef | None,
    failed: str | None,
    replicas: int,
    expected: tuple[Any, ...],
) -> None:
    plan = plan_rollout(target, read(dep) if dep else None, replicas, good, failed)
    got = (
        plan.serve,
        plan.update,
        plan.good,
        plan.failed_sha256,
        (plan.progressing.status, plan.progressing.reason),
        plan.ready.status,
    )
    assert got == expected
    assert plan.good is None or plan.good.sha256 != plan.failed_sha256  # a failing model is never good


def test_rollout_messages_say_why() -> None:
    failing = read(deployment(B, spec=1, replicas=2, updated=1, available=1, progressing=DEADLINE))
    back = plan_rollout(B, failing, 1, A, None)
    assert back.progressing.message == (
        f"model {B.uri} did not become ready within the Deployment's progress deadline "
        f"(ProgressDeadlineExceeded); rolling back to the last good model {A.uri}"
    )
    none = plan_rollout(B, failing, 1, None, None)
    assert none.progressing.message.endswith("; there is no earlier good model to roll back to")
    # the rolled-back generation, observed, still carries the deadline of the failed one
    sticky = read(
        deployment(
            A, generation=4, observed=4, spec=1, replicas=2, updated=1, available=1, progressing=DEADLINE
        )
    )
    assert plan_rollout(B, sticky, 1, A, "sha-b").progressing.message == back.progressing.message
    same = plan_rollout(B, failing, 1, B, None)
    assert same.progressing.message.endswith("; it is the last good model, there is nothing to roll back to")
    assert B.uri in none.progressing.message and B.uri in same.progressing.message


@pytest.mark.parametrize(
    ("dep", "progress"),
    [
        (
            deployment(B, generation=3, observed=2),
            "waiting for the Deployment controller to observe generation 3",
        ),
        (deployment(B, spec=3, replicas=4, updated=2, available=3), "2 of 3 new replicas updated"),
        (deployment(B, spec=1, replicas=3, updated=1, available=1), "2 old replicas pending termination"),
        (deployment(B, spec=2, replicas=2, updated=2, available=1), "1 of 2 updated replicas available"),
        (deployment(B), "complete"),
    ],
)
def test_read_rollout_says_what_it_waits_for(dep: dict[str, Any], progress: str) -> None:
    rollout = read(dep)
    assert rollout.progress == progress
    assert rollout.complete == (progress == "complete")
    assert rollout.model == "sha-b" and not rollout.failed
