"""Live quality on the real control plane: a deployed model's pod is sent requests and then the
true labels for its predictions through the feedback endpoint; the operator reads the live
accuracy from the pod (as it reads drift). Labels that keep it above `min` start nothing;
labels that take it under start exactly one retraining run (the cooldown holds), labelled and
recorded as triggered by "performance"."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster.api import Api
from tests.integration.kube.conftest import (
    OperatorProcess,
    create,
    items,
    wait_for,
)
from tests.integration.kube.test_modeldeployments import (
    PIPELINE,
    md_status,
    model_deployment,
    only_pod,
    serving,
    train,
    tunable_pipeline,
)

PERFORMANCE = {"metric": "accuracy", "min": 0.8, "window": 200, "minSamples": 50, "for": "0s"}
RETRAIN = {"pipelineRef": PIPELINE, "params": {"c": "0.05"}, "cooldown": "1h", "maxRunsPerDay": 3}


def labelled_rows(n: int, seed: int) -> tuple[list[dict[str, Any]], list[int]]:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.sample(n, random_state=seed)
    target = [int(t) for t in frame.pop("target")]
    return list(frame.to_dict(orient="records")), target


async def post(pod: dict[str, Any], path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Straight to the pod (there is no kube-proxy here; a client would use the Service)."""
    url = f"http://{pod['status']['podIP']}:8000{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.post(url, json=body) as resp,
    ):
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, answer
        return answer


async def predict(pod: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    ids, preds = [], []
    for i in range(0, len(rows), 50):
        answer = await post(pod, "/predict", {"instances": rows[i : i + 50]})
        ids += answer["ids"]
        preds += answer["predictions"]
    return ids, preds


async def retrains(kube: Api, ns: str) -> list[dict[str, Any]]:
    return await items(kube, "pipelineruns", ns, "conveyor.dev/modeldeployment=bc")


@pytest.mark.slow
async def test_live_accuracy_under_its_bound_starts_one_retraining_run(
    kube: Api, ns: str, model_operator: OperatorProcess, s3: dict[str, str], tmp_path: Path
) -> None:
    pipeline = tunable_pipeline(s3, ns)
    first = await train(pipeline, tmp_path)
    await create(kube, pipeline, ns)
    await create(kube, model_deployment(monitoring={"performance": PERFORMANCE}, retrain=RETRAIN), ns)
    await wait_for(lambda: serving(kube, ns, first["model"]["uri"]), 120, "the model to serve")
    pod = await wait_for(lambda: only_pod(kube, ns), 30, "one ready pod")
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--quality-window") + 1] == "200"

    # Labels that agree with the model: the live accuracy stays above 0.8, nothing starts.
    rows, truth = labelled_rows(100, seed=1)
    ids, preds = await predict(pod, rows)
    accuracy = sum(p == t for p, t in zip(preds, truth, strict=True)) / len(truth)
    assert accuracy > 0.9
    feedback = {"ids": [*ids, "nope"], "values": [*truth, 0]}
    answer = await post(pod, f"/v2/models/{PIPELINE}/feedback", feedback)
    assert (answer["accepted"], answer["unknown"]) == (100, ["nope"])

    async def read(samples: int) -> dict[str, Any] | None:
        st = await md_status(kube, ns)
        return st if st.get("labelledSamples") == samples else None

    st = await wait_for(lambda: read(100), 30, "the status to show the live accuracy")
    assert st["lastPerformance"] == round(accuracy, 4) and "performanceSince" not in st
    await asyncio.sleep(6)  # three more looks at it
    assert await retrains(kube, ns) == []

    # Labels that disagree: the last 200 labels are all wrong, accuracy 0 < 0.8.
    rows, truth = labelled_rows(200, seed=2)
    ids, preds = await predict(pod, rows)
    await post(pod, "/feedback", {"ids": ids, "values": [1 - p for p in preds]})
    (run,) = await wait_for(lambda: retrains(kube, ns), 60, "a retraining run")
    assert run["metadata"]["labels"]["conveyor.dev/trigger"] == "performance"
    assert run["spec"]["pipelineRef"] == {"name": PIPELINE} and run["spec"]["params"] == {"c": "0.05"}
    name = run["metadata"]["name"]

    async def recorded() -> dict[str, Any] | None:
        st = await md_status(kube, ns)
        return st if st.get("lastRetrainRun") == name else None

    st = await wait_for(recorded, 30, "the status to record the retraining run")
    assert st["lastRetrainTrigger"] == "performance"
    assert st["lastRetrainReason"] == "accuracy 0.000 < 0.8 over 200 labels for 0s"
    assert (st["lastPerformance"], st["labelledSamples"]) == (0.0, 200)
    reason = run["metadata"]["annotations"]["conveyor.dev/trigger-reason"]
    assert reason == st["lastRetrainReason"]

    async def degraded() -> list[dict[str, Any]] | None:
        found = [e for e in await items(kube, "events", ns) if e["reason"] == "PerformanceDegraded"]
        return found or None

    # The reconciler writes the status, then its events: the event may land just after.
    events = await wait_for(degraded, 30, "the PerformanceDegraded event")
    assert len(events) == 1 and name in events[0]["message"]

    # Still under its bound, looked at again and again: the cooldown holds, one run only.
    await asyncio.sleep(8)
    assert [r["metadata"]["name"] for r in await retrains(kube, ns)] == [name]
    assert (await md_status(kube, ns))["lastRetrainRun"] == name
