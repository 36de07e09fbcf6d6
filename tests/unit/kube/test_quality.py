"""Reading a ModelDeployment's live quality (kube/quality.py) from the model servers' series:
each process's (value, labelled count) matched by labels, pooled across pods and workers as
the metric over all the labels would be; the same from Prometheus' answer as from /metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conveyor.api.modeldeployment import ModelDeploymentSpec
from conveyor.engine.modeldeployments import Quality
from conveyor.kube.manifests import server_args
from conveyor.kube.quality import (
    combine,
    estimates,
    exposition_series,
    prometheus_series,
    quality_query,
)

POD = """# HELP conveyor_model_quality Live quality.
# TYPE conveyor_model_quality gauge
conveyor_model_quality{metric="accuracy",model="bc",pid="1",version="r1"} 0.9
conveyor_model_quality{metric="f1",model="bc",pid="1",version="r1"} 0.8
conveyor_model_quality{metric="accuracy",model="bc",pid="2",version="r1"} 0.5
# HELP conveyor_quality_samples Labelled.
# TYPE conveyor_quality_samples gauge
conveyor_quality_samples{model="bc",pid="1",version="r1"} 300.0
conveyor_quality_samples{model="bc",pid="2",version="r1"} 100.0
# HELP conveyor_drift_score Drift.
# TYPE conveyor_drift_score gauge
conveyor_drift_score{model="bc",version="r1"} 0.1
"""


def test_workers_of_a_pod_are_matched_by_their_labels_and_pooled() -> None:
    series = exposition_series(POD)
    assert len(series) == 5  # the quality series only
    assert sorted(estimates(series, "accuracy")) == [(0.5, 100.0), (0.9, 300.0)]
    assert combine(estimates(series, "accuracy"), "accuracy") == Quality(pytest.approx(0.8), 400.0)
    assert combine(estimates(series, "f1"), "f1") == Quality(0.8, 300.0)
    assert combine(estimates(series, "rmse"), "rmse") is None  # a classifier has none


def test_pooled_rmse_and_mae_are_those_of_all_the_labels() -> None:
    rng = np.random.default_rng(0)
    errors = [rng.normal(size=n) for n in (50, 200, 120)]
    rmse, mae = (lambda e: float(np.sqrt(np.mean(e**2)))), (lambda e: float(np.mean(np.abs(e))))
    for metric, of in (("rmse", rmse), ("mae", mae)):
        pooled = combine([(of(e), float(len(e))) for e in errors], metric)
        assert pooled is not None and pooled.samples == 370
        assert pooled.value == pytest.approx(of(np.concatenate(errors)))


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], None),
        ([(math.nan, 10.0)], "nan"),
        ([(0.7, 0.0)], "nan"),  # no labels behind it
        ([(0.7, math.nan)], "nan"),  # no count to weigh it by
        ([(0.9, 10.0), (math.nan, 5.0)], 0.9),
    ],
    ids=["nothing", "nan-value", "zero-count", "no-count", "one-finite"],
)
def test_what_cannot_be_weighed_is_left_out(pairs: list[tuple[float, float]], expected: object) -> None:
    got = combine(pairs, "accuracy")
    if expected is None:
        assert got is None
    elif expected == "nan":
        assert got is not None and math.isnan(got.value)
    else:
        assert got is not None and got.value == expected


def test_unparseable_metrics_are_no_series() -> None:
    assert exposition_series("conveyor_model_quality{metric=") == []
    assert exposition_series(None) == []


def test_prometheus_answer_gives_what_the_pods_give() -> None:
    result = []
    for name, labels, value in exposition_series(POD):
        target = {"namespace": "ml", "service": "bc", "pod": "bc-1", "instance": "10.0.0.1:8000"}
        result.append({"metric": {"__name__": name, **labels, **target}, "value": [0, str(value)]})
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
    from_prometheus = combine(estimates(prometheus_series(body), "accuracy"), "accuracy")
    assert from_prometheus == combine(estimates(exposition_series(POD), "accuracy"), "accuracy")
    assert prometheus_series(json.dumps({"status": "error"})) == [] and prometheus_series("<html>") == []
    assert quality_query("ml", "bc") == (
        '{__name__=~"conveyor_model_quality|conveyor_quality_samples",namespace="ml",service="bc"}'
    )


def test_the_server_is_given_the_labelled_window() -> None:
    perf = {"performance": {"metric": "accuracy", "min": 0.8, "window": 300}}
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m"}, "monitoring": perf})
    assert server_args(spec, "s3://b/m")[-2:] == ["--quality-window", "300"]
    plain = server_args(ModelDeploymentSpec.model_validate({"model": {"uri": "s3://b/m"}}), "s3://b/m")
    assert "--quality-window" not in plain
