"""A ModelDeployment's drift score: read from every ready pod of its model server, or from
Prometheus when the operator is given one (`Settings.prometheus_url`).

Each pod runs its own drift monitor over the requests it was sent: `conveyor_drift_score`
(the worst feature's drift over its last `window` rows) and `conveyor_drift_window_size` (how
many rows that is). The Service's URL would reach one replica picked by the proxy (and needs
cluster DNS and a proxy where the operator runs), so `PodDrift` reads `/metrics` from each
ready pod the Service selects (what its endpoints are, and what Prometheus' pod discovery
scrapes), on the container port named `http`. `PrometheusDrift` asks Prometheus for the same
series, as the ModelDeployment's ServiceMonitor has them scraped. Either way one `Sample` per
pod, combined the same way (`combine`).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from conveyor.contract import METRICS_PATH, SERVE_PORT_NAME
from conveyor.kube.client import PODS, Body, KubeClient
from conveyor.kube.manifests import model_server_name, selector_labels
from conveyor.kube.settings import Settings

DriftReader = Callable[[str, str], Awaitable[float | None]]  # (namespace, ModelDeployment) -> score
GetText = Callable[[str], Awaitable[str | None]]  # a URL's body; None when it did not answer 200
SCORE, ROWS = "conveyor_drift_score", "conveyor_drift_window_size"


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


def ready_pods(pods: Iterable[Body], port_name: str = SERVE_PORT_NAME) -> list[str]:
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
            urls.append(f"http://{host}:{port}{METRICS_PATH}")
    return sorted(urls)


class PodDrift:
    """The drift reader the operator uses: every ready pod of the model server."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def __call__(self, namespace: str, name: str) -> float | None:
        urls = ready_pods(await self.kube.list(PODS, namespace, selector_labels(name)))
        texts = await asyncio.gather(*(self.kube.get_text(url) for url in urls))
        return combine(s for s in map(pod_sample, texts) if s is not None)


def drift_query(namespace: str, service: str) -> str:
    """PromQL for a model server's drift series, by the labels the Prometheus Operator gives
    the targets of a ServiceMonitor (kube/manifests.py `desired_service_monitor`): `namespace`,
    `service` (the Service's name) and `pod`."""
    names = "|".join((SCORE, ROWS))
    return f'{{__name__=~"{names}",namespace={json.dumps(namespace)},service={json.dumps(service)}}}'


def prometheus_samples(body: str) -> list[Sample]:
    """One `Sample` per pod from an instant-vector answer of Prometheus' HTTP API, as
    `pod_sample` makes one from a pod's /metrics: the worst score of the pod's series, the rows
    of all its windows; a pod without a score (too few rows yet) is left out. No samples from
    an answer that is not a successful one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return []
    if not isinstance(answer, dict) or answer.get("status") != "success":
        return []
    scores: dict[str, list[float]] = defaultdict(list)
    rows: dict[str, list[float]] = defaultdict(list)
    for series in answer.get("data", {}).get("result", []):
        labels: dict[str, Any] = series.get("metric", {})
        pod = str(labels.get("pod") or labels.get("instance") or "")
        (scores if labels.get("__name__") == SCORE else rows)[pod].append(float(series["value"][1]))
    return [Sample(max(values), sum(rows[pod])) for pod, values in scores.items()]


class PrometheusDrift:
    """The drift reader when the operator is given a Prometheus: one instant query for the
    model server's series, combined per pod as `PodDrift` does (`combine` itself, so both
    readers mean the same number; PromQL alone could not tell "no score yet" from "no finite
    score"). None when Prometheus does not answer, as when no pod does."""

    def __init__(self, url: str, get_text: GetText) -> None:
        self.url, self.get_text = url.rstrip("/"), get_text

    async def __call__(self, namespace: str, name: str) -> float | None:
        query = urlencode({"query": drift_query(namespace, model_server_name(name))})
        body = await self.get_text(f"{self.url}/api/v1/query?{query}")
        return None if body is None else combine(prometheus_samples(body))


def drift_reader(kube: KubeClient, settings: Settings) -> DriftReader:
    """Prometheus when the operator is given one, else every ready pod."""
    if settings.prometheus_url:
        return PrometheusDrift(settings.prometheus_url, kube.get_text)
    return PodDrift(kube)
