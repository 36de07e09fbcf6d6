"""The operator's /metrics before anything happened: the failed-run counter exists at zero (so
`increase()` sees the first failure after a start), and the build-info gauge says which Conveyor."""

from __future__ import annotations

import platform

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conveyor import __version__
from conveyor.kube import metrics  # noqa: F401  (defines the operator's metrics)


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(REGISTRY).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_final_phase_has_a_series_from_the_start() -> None:
    exposed = samples()
    for phase in ("Succeeded", "Failed", "Cancelled"):
        assert (("conveyor_pipelineruns_finished_total", (("phase", phase),))) in exposed, phase
    assert ("conveyor_reconcile_errors_total", (("kind", "PipelineRun"),)) in exposed


def test_build_info() -> None:
    labels = (("python_version", platform.python_version()), ("version", __version__))
    assert samples()[("conveyor_build_info", labels)] == 1.0
