"""A ModelDeployment's live quality (`spec.monitoring.performance`), read the way its drift is
(kube/drift.py): from every ready pod of its model server, or from Prometheus when the operator
is given one.

Each model server computes its metric over the labels it was sent
(`conveyor_model_quality{metric=...}`) and says how many labelled predictions that is
(`conveyor_quality_samples`); with `conveyor serve --workers` each worker has its own pair (a
`pid` label). Every pair is one estimate from its own labels, so the deployment's metric is
their mean weighted by those counts, which for accuracy and MAE is exactly the metric over all
the labels, and for RMSE is made exact by averaging squares; F1 is approximated by it. The count
is the total, which the planner compares with `minSamples`.

The model server also needs the size of its labelled window: `server_args` below gives
`conveyor serve` the flags for it.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families

from conveyor.engine.modeldeployments import Quality
from conveyor.kube.client import PODS, KubeClient
from conveyor.kube.drift import GetText, ready_pods
from conveyor.kube.manifests import model_server_name, selector_labels
from conveyor.kube.settings import Settings

QualityReader = Callable[[str, str, str], Awaitable[Quality | None]]  # (namespace, name, metric)
VALUE, SAMPLES = "conveyor_model_quality", "conveyor_quality_samples"
Series = tuple[str, dict[str, str], float]  # (metric name, labels, value)


def exposition_series(text: str | None) -> list[Series]:
    """The quality series of a Prometheus text exposition (none from one that does not parse)."""
    if not text:
        return []
    try:
        return [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name in (VALUE, SAMPLES)
        ]
    except ValueError:
        return []


def estimates(series: Iterable[Series], metric: str) -> list[tuple[float, float]]:
    """(value, labelled count) of each process that reports `metric`: its value series matched
    with the count series of the same labels (but `metric`)."""
    values: dict[frozenset[tuple[str, str]], float] = {}
    counts: dict[frozenset[tuple[str, str]], float] = {}
    for name, labels, value in series:
        key = frozenset((k, v) for k, v in labels.items() if k not in ("metric", "__name__"))
        if name == SAMPLES:
            counts[key] = value
        elif labels.get("metric") == metric:
            values[key] = value
    return [(value, counts.get(key, math.nan)) for key, value in values.items()]


def combine(pairs: Iterable[tuple[float, float]], metric: str) -> Quality | None:
    """The deployment's metric over all labels (see the module docstring); None when no
    process reports it, a NaN value when none has a finite one over at least one label."""
    pairs = list(pairs)
    if not pairs:
        return None
    usable = [(v, n) for v, n in pairs if math.isfinite(v) and math.isfinite(n) and n > 0]
    total = sum(n for _, n in usable)
    if not usable:
        return Quality(math.nan, total)
    if metric == "rmse":
        return Quality(math.sqrt(sum(v * v * n for v, n in usable) / total), total)
    return Quality(sum(v * n for v, n in usable) / total, total)


class PodQuality:
    """The quality reader the operator uses: every ready pod of the model server."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def __call__(self, namespace: str, name: str, metric: str) -> Quality | None:
        urls = ready_pods(await self.kube.list(PODS, namespace, selector_labels(name)))
        texts = await asyncio.gather(*(self.kube.get_text(url) for url in urls))
        series = [s for text in texts for s in exposition_series(text)]
        return combine(estimates(series, metric), metric)


def quality_query(namespace: str, service: str) -> str:
    """PromQL for a model server's quality series, by the ServiceMonitor's target labels."""
    names = "|".join((VALUE, SAMPLES))
    return f'{{__name__=~"{names}",namespace={json.dumps(namespace)},service={json.dumps(service)}}}'


def prometheus_series(body: str) -> list[Series]:
    """The series of an instant-vector answer of Prometheus' HTTP API; none from an answer that
    is not a successful one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return []
    if not isinstance(answer, dict) or answer.get("status") != "success":
        return []
    out: list[Series] = []
    for series in answer.get("data", {}).get("result", []):
        labels: dict[str, Any] = series.get("metric", {})
        name = str(labels.get("__name__", ""))
        out.append((name, {k: str(v) for k, v in labels.items()}, float(series["value"][1])))
    return out


class PrometheusQuality:
    """The quality reader when the operator is given a Prometheus: one instant query, combined
    as `PodQuality` combines the pods' own series. None when Prometheus does not answer."""

    def __init__(self, url: str, get_text: GetText) -> None:
        self.url, self.get_text = url.rstrip("/"), get_text

    async def __call__(self, namespace: str, name: str, metric: str) -> Quality | None:
        query = urlencode({"query": quality_query(namespace, model_server_name(name))})
        body = await self.get_text(f"{self.url}/api/v1/query?{query}")
        return None if body is None else combine(estimates(prometheus_series(body), metric), metric)


def quality_reader(kube: KubeClient, settings: Settings) -> QualityReader:
    """Prometheus when the operator is given one, else every ready pod."""
    if settings.prometheus_url:
        return PrometheusQuality(settings.prometheus_url, kube.get_text)
    return PodQuality(kube)
