"""A ModelDeployment's drift score, read from every ready pod of its model server.

Each pod runs its own drift monitor over the requests it was sent: `conveyor_drift_score`
(the worst feature's drift over its last `window` rows) and `conveyor_drift_window_size` (how
many rows that is). The Service's URL would reach one replica picked by the proxy (and needs
cluster DNS and a proxy where the operator runs), so the operator reads `/metrics` from each
ready pod the Service selects (what its endpoints are, and what Prometheus' pod discovery
scrapes), on the container port named `http`, and combines the scores (`combine`).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from conveyor.kube.client import PODS, Body, KubeClient
from conveyor.kube.manifests import selector_labels

DriftReader = Callable[[str, str], Awaitable[float | None]]  # (namespace, ModelDeployment) -> score
PORT_NAME = "http"


@dataclass(frozen=True)
class Sample:
    """One pod's drift score and the number of rows it was computed from."""

    score: float
    rows: float


def _values(metrics_text: str, metric: str) -> list[float]:
    """The values of a metric's series in a Prometheus text exposition."""
    return [
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith((metric + "{", metric + " "))
    ]


def drift_score(metrics_text: str) -> float | None:
    """The largest `conveyor_drift_score` in a Prometheus text exposition."""
    values = _values(metrics_text, "conveyor_drift_score")
    return max(values) if values else None


def pod_sample(metrics_text: str | None) -> Sample | None:
    """A pod's sample; None while it has too few rows for a score (or did not answer). With
    `conveyor serve --workers` the series of all workers are there: the worst score, and the
    rows of all windows."""
    score = drift_score(metrics_text) if metrics_text else None
    if metrics_text is None or score is None:
        return None
    return Sample(score, sum(_values(metrics_text, "conveyor_drift_window_size")))


def combine(samples: Iterable[Sample]) -> float | None:
    """The deployment's drift: the mean of its pods' scores weighted by the rows each score
    was computed from; None when no pod has a score yet, NaN when none has a finite one.

    Not the worst pod's score: a Service spreads its clients over the replicas, so every pod's
    window is a sample of the same traffic, and its score an estimate of the same drift. The
    weighted mean is the estimate from all those rows; the maximum of N noisy estimates grows
    with N (PSI on a few hundred rows is biased upward and varies), so adding replicas would
    start retraining runs, and spend `maxRunsPerDay`, on noise. A pod that just started has
    few rows and counts for little. Traffic pinned to one pod (one client on a keep-alive
    connection) is diluted by this; the PrometheusRule's alert takes the maximum for people
    to look at, while the operator acts on the whole deployment's drift."""
    samples = list(samples)
    finite = [s for s in samples if math.isfinite(s.score) and math.isfinite(s.rows)]
    if not finite:
        return math.nan if samples else None
    weights = [max(s.rows, 1.0) for s in finite]
    return sum(s.score * w for s, w in zip(finite, weights, strict=True)) / sum(weights)


def ready_pods(pods: Iterable[Body], port_name: str = PORT_NAME) -> list[str]:
    """`/metrics` URLs of the pods that are Ready, have an IP and are not terminating (what a
    Service's ready endpoints are), on each one's container port of that name."""
    urls = []
    for pod in pods:
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        ip = status.get("podIP")
        if not ready or not ip or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        ports = [p for c in (pod.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []]
        port = next((p.get("containerPort") for p in ports if p.get("name") == port_name), None)
        if port is not None:
            host = f"[{ip}]" if ":" in ip else ip
            urls.append(f"http://{host}:{port}/metrics")
    return sorted(urls)


def prometheus_value(body: str) -> float | None:
    """The value of an instant-vector answer of Prometheus' HTTP API."""
    result = json.loads(body).get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


class PodDrift:
    """The drift reader the operator uses: every ready pod of the model server."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def __call__(self, namespace: str, name: str) -> float | None:
        urls = ready_pods(await self.kube.list(PODS, namespace, selector_labels(name)))
        texts = await asyncio.gather(*(self.kube.get_text(url) for url in urls))
        return combine(s for s in map(pod_sample, texts) if s is not None)
