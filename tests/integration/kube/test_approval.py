"""Human approval on the real control plane: a pipeline whose evaluate stage says
`promotion: Manual` runs on the cluster, its model waits (AwaitingApproval), the ModelDeployment
keeps serving the old champion; setting `spec.approval` on the run (set once: the API server
refuses to change it) promotes the model and the deployment rolls to it; a rejection leaves the
deployment alone and is recorded with its reason."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.api import Api, ApiError
from tests.integration.kube.conftest import (
    OperatorProcess,
    create,
    get,
    merge_patch,
    wait_for,
)
from tests.integration.kube.runs_helpers import finished, run_of
from tests.integration.kube.test_modeldeployments import (
    PIPELINE,
    md_status,
    model_deployment,
    serving,
    train,
    tunable_pipeline,
)


def manual(pipeline: dict[str, Any]) -> dict[str, Any]:
    """The pipeline with its evaluate stage waiting for a human (and no champion comparison, so
    every model that passes the gate waits)."""
    doc = copy.deepcopy(pipeline)
    evaluate = doc["spec"]["stages"][-1]["with"]
    evaluate.pop("compareTo", None)
    evaluate["promotion"] = "Manual"
    return doc


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


async def waiting(kube: Api, ns: str, run: str) -> dict[str, Any]:
    st = await wait_for(lambda: finished(kube, ns, run), 300, f"run {run} to finish")
    assert st["phase"] == "Succeeded", st
    assert st["model"]["approval"] == "Pending" and st["model"]["promoted"] is False, st["model"]
    assert condition(st, "AwaitingApproval")["status"] == "True", st["conditions"]
    return st


async def decided(kube: Api, ns: str, run: str, approval: str) -> dict[str, Any] | None:
    obj = await get(kube, "pipelineruns", ns, run) or {}
    st = obj.get("status") or {}
    return st if (st.get("model") or {}).get("approval") == approval else None


@pytest.mark.slow
async def test_the_deployment_rolls_only_after_approval_and_a_rejection_is_recorded(
    kube: Api, ns: str, model_operator: OperatorProcess, s3: dict[str, str], tmp_path: Path
) -> None:
    pipeline = tunable_pipeline(s3, ns)
    first = await train(pipeline, tmp_path)  # the champion today (promoted automatically)
    await create(kube, manual(pipeline), ns)
    await create(kube, model_deployment(), ns)
    await wait_for(lambda: serving(kube, ns, first["model"]["uri"]), 120, "the first model to serve")

    await create(kube, run_of(PIPELINE, "candidate", params={"c": "0.05"}), ns)
    st = await waiting(kube, ns, "candidate")
    candidate = st["model"]
    assert candidate["sha256"] != first["model"]["sha256"]
    for _ in range(3):  # three of the operator's looks at the deployment (every 2 s): the old model
        await asyncio.sleep(2)
        assert (await md_status(kube, ns))["modelUri"] == first["model"]["uri"]
    decision = {"spec": {"approval": {"decision": "Approve", "by": "alice"}}}
    await merge_patch(kube, "pipelineruns", ns, "candidate", decision)
    st = await wait_for(
        lambda: decided(kube, ns, "candidate", "Approved"), 60, "the approval to be carried out"
    )
    assert st["model"]["promoted"] is True and st["model"]["approvedBy"] == "alice"
    assert condition(st, "AwaitingApproval")["status"] == "False"
    assert condition(st, "AwaitingApproval")["reason"] == "Approved"
    await wait_for(lambda: serving(kube, ns, candidate["uri"]), 180, "the approved model to serve")

    # set once: the API server refuses another decision
    with pytest.raises(ApiError) as err:
        change = {"spec": {"approval": {"decision": "Reject", "by": "mallory", "reason": "changed my mind"}}}
        await merge_patch(kube, "pipelineruns", ns, "candidate", change)
    assert err.value.status == 422 and "set once" in str(err.value)

    await create(kube, run_of(PIPELINE, "rejected", params={"c": "0.2"}), ns)
    await waiting(kube, ns, "rejected")
    reason = "trained on last week's mislabelled batch"
    rejection = {"spec": {"approval": {"decision": "Reject", "by": "carol", "reason": reason}}}
    await merge_patch(kube, "pipelineruns", ns, "rejected", rejection)
    st = await wait_for(lambda: decided(kube, ns, "rejected", "Rejected"), 60, "the rejection to be recorded")
    assert st["model"]["promoted"] is False and st["model"]["approvalReason"] == reason
    assert condition(st, "AwaitingApproval")["reason"] == "Rejected"
    md = await md_status(kube, ns)
    assert md["modelUri"] == candidate["uri"]  # still the approved model
