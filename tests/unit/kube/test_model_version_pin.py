"""A ModelDeployment may pin `fromPipeline` + `version`: the reconciler serves that promoted
version (from the pipeline's S3 store, on moto), not whatever the champion is now."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.api.crd import all_crds
from conveyor.api.modeldeployment import ModelDeploymentSpec, ModelSource
from conveyor.artifacts import champion as champions
from conveyor.artifacts.layout import Champion
from conveyor.artifacts.store import S3Store
from conveyor.engine.invocation import ArtifactRef
from conveyor.engine.validation import InvalidResource
from conveyor.kube.client import PIPELINES
from conveyor.kube.reconcilers.modeldeployment import ModelDeploymentReconciler
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver


class Kube:
    """Answers `get` for one Pipeline; nothing else is called while resolving the model."""

    def __init__(self, bucket: str) -> None:
        self.pipeline = {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "artifacts": {"s3": {"bucket": bucket, "prefix": "a"}},
                "stages": [{"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}}],
            },
        }

    async def get(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pipeline if resource == PIPELINES and name == "p" else None


def _promote_two(bucket: str) -> list[ArtifactRef]:
    store = S3Store(bucket, "a")
    models = []
    for version, run in enumerate(("r1", "r2"), start=1):
        model = store.write_bytes(f"ns/p/{run}/train/model.skops", run.encode(), "application/x-skops")
        new = Champion(run=run, model=model, promoted_at=datetime.now(UTC), version=version)
        assert champions.promote(store, "ns", "p", champions.current(store, "ns", "p"), new)
        models.append(model)
    return models


def _target(bucket: str, s3_env: str, source: dict[str, Any]) -> Any:
    settings = Settings(s3_endpoint=s3_env)
    reconciler = ModelDeploymentReconciler(
        Kube(bucket),  # type: ignore[arg-type]
        settings,
        StoreResolver(settings),
        drift=lambda *a: None,  # type: ignore[arg-type,return-value]
        quality=lambda *a: None,  # type: ignore[arg-type,return-value]
    )
    spec = ModelDeploymentSpec.model_validate({"model": source})
    return asyncio.run(reconciler._target(spec, "ns"))


def test_a_pinned_version_is_served_not_the_champion(bucket: str, s3_env: str) -> None:
    first, second = _promote_two(bucket)
    pinned, _ = _target(bucket, s3_env, {"fromPipeline": "p", "version": 1})
    assert (pinned.uri, pinned.sha256, pinned.version) == (first.uri, first.sha256, "r1")
    following, _ = _target(bucket, s3_env, {"fromPipeline": "p"})
    assert (following.uri, following.version) == (second.uri, "r2")


def test_a_version_that_does_not_exist_names_the_field_and_the_fix(bucket: str, s3_env: str) -> None:
    _promote_two(bucket)
    with pytest.raises(InvalidResource) as err:
        _target(bucket, s3_env, {"fromPipeline": "p", "version": 7})
    assert str(err.value) == (
        "spec.model.version: pipeline 'p' has no model version 7 (fix: pick one `conveyor models p` "
        "lists, or remove version to follow the champion)"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param({"uri": "s3://b/m", "version": 1}, "set `fromPipeline` too", id="version-with-uri"),
        pytest.param({"fromPipeline": "p", "version": 0}, "greater than or equal to 1", id="version-zero"),
    ],
)
def test_version_needs_from_pipeline(source: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelSource.model_validate(source)


def test_the_crd_carries_the_rule_too() -> None:
    crd = all_crds()["conveyor.dev_modeldeployments.yaml"]
    model = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "model"
    ]
    assert model["properties"]["version"] == {
        "type": "integer",
        "minimum": 1,
        "nullable": True,
        "description": model["properties"]["version"]["description"],
    }
    assert {"rule": "!has(self.version) || has(self.fromPipeline)"}.items() <= next(
        r for r in model["x-kubernetes-validations"] if "version" in r["rule"]
    ).items()
