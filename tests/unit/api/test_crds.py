"""The CRDs are generated from the models, valid CRDs, and accept the examples."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conveyor.api.crd import all_crds
from tests.k8s import CRDS, validate_custom, validate_k8s

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_DOCS = [
    (f"{p.relative_to(EXAMPLES)}#{i}", d)
    for p in sorted(EXAMPLES.rglob("*.yaml"))
    for i, d in enumerate(yaml.safe_load_all(p.read_text()))
    if d and str(d.get("apiVersion", "")).startswith("conveyor.dev/")
]


def test_committed_crds_match_the_models() -> None:
    generated = all_crds()
    committed = {p.name: yaml.safe_load(p.read_text()) for p in CRDS.glob("*.yaml")}
    assert committed == generated, "crds/ is stale: run `make crds`"


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_crd_is_a_valid_kubernetes_object(name: str) -> None:
    validate_k8s(all_crds()[name])


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_crd_schema_is_structural(name: str) -> None:
    """No $ref, anyOf with types, or properties next to additionalProperties."""
    schema = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node: dict, path: str) -> None:
        assert "$ref" not in node and "anyOf" not in node and "const" not in node, path
        assert (
            "type" in node
            or node.get("x-kubernetes-preserve-unknown-fields")
            or node.get("x-kubernetes-int-or-string")
        ), path
        assert not ("properties" in node and "additionalProperties" in node), path
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "")


def test_there_are_examples() -> None:
    kinds = {d["kind"] for _, d in EXAMPLE_DOCS}
    assert {"Pipeline", "PipelineRun"} <= kinds


@pytest.mark.parametrize(("where", "doc"), EXAMPLE_DOCS, ids=[w for w, _ in EXAMPLE_DOCS])
def test_example_passes_its_crd_schema(where: str, doc: dict) -> None:
    assert validate_custom(doc) == []


RUN = {
    "apiVersion": "conveyor.dev/v1alpha1",
    "kind": "PipelineRun",
    "metadata": {"name": "r"},
    "spec": {"pipelineRef": {"name": "p"}, "params": {"a": "1"}},
}


def test_schema_rejects_an_unknown_field() -> None:
    bad = copy.deepcopy(RUN)
    bad["spec"]["pipelineRefs"] = {"name": "p"}
    assert any("pipelineRefs" in e for e in validate_custom(bad))


def test_run_spec_is_immutable_except_cancelled() -> None:
    changed = copy.deepcopy(RUN)
    changed["spec"]["params"]["a"] = "2"
    assert validate_custom(changed, old=RUN) == [
        "spec: a PipelineRun's spec is immutable except `cancelled`; create a new run "
        "(use resumeFrom to reuse this one's stages)"
    ]
    added = copy.deepcopy(RUN)
    added["spec"]["resumeFrom"] = {"run": "r0"}
    assert validate_custom(added, old=RUN) != []
    cancelled = copy.deepcopy(RUN)
    cancelled["spec"]["cancelled"] = True
    assert validate_custom(cancelled, old=RUN) == []


def test_stage_needs_exactly_one_of_uses_or_image() -> None:
    pipe = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {"stages": [{"name": "a", "uses": "ingest", "image": "busybox"}]},
    }
    assert validate_custom(pipe) == [
        "spec.stages[0]: set exactly one of uses (a built-in stage) or image (a custom one)"
    ]
