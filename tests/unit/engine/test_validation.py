"""Each class of `conveyor validate` error names the field path and says how to fix it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conveyor.api.pipeline import PipelineSpec
from conveyor.engine.validation import check_document, resolve_params

GOOD: dict[str, Any] = {
    "apiVersion": "conveyor.dev/v1alpha1",
    "kind": "Pipeline",
    "metadata": {"name": "p"},
    "spec": {
        "params": [{"name": "acc", "default": "0.9"}, {"name": "est"}],
        "stages": [
            {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
            {"name": "prep", "uses": "transform", "dependsOn": ["ingest"]},
            {
                "name": "train",
                "uses": "train",
                "dependsOn": ["prep"],
                "with": {"estimator": "$(params.est)"},
            },
            {
                "name": "eval",
                "uses": "evaluate",
                "dependsOn": ["train"],
                "with": {"gate": {"metric": "accuracy", "min": "$(params.acc)"}},
            },
        ],
    },
}


def mutate(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    target: Any = doc
    parts = path.split("/")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


def test_good_pipeline_has_no_problems() -> None:
    assert check_document(GOOD) == []


CASES = [
    (
        "duplicate name",
        mutate("spec/stages/1/name", "ingest"),
        "spec.stages[1].name",
        "duplicate stage name",
        "unique",
    ),
    (
        "unknown dependsOn",
        mutate("spec/stages/2/dependsOn", ["prep", "trian"]),
        "spec.stages[2].dependsOn[1]",
        "unknown stage 'trian'",
        "name one of",
    ),
    (
        "cycle",
        mutate("spec/stages/0/dependsOn", ["eval"]),
        "spec.stages[0].dependsOn",
        "cycle: ingest -> eval -> train -> prep -> ingest",
        "remove one",
    ),
    (
        "unknown built-in",
        mutate("spec/stages/1/uses", "transfrom"),
        "spec.stages[1].uses",
        "unknown built-in stage 'transfrom'",
        "use one of",
    ),
    (
        "unknown option",
        mutate("spec/stages/1/with", {"testSize": 0.2, "tset": 1}),
        "spec.stages[1].with.tset",
        "unknown field",
        "remove it",
    ),
    (
        "bad option value",
        mutate("spec/stages/1/with", {"testSize": 2}),
        "spec.stages[1].with.testSize",
        "less than 1",
        "",
    ),
    (
        "unresolved param",
        mutate("spec/stages/0/with", {"source": "$(params.src)"}),
        "spec.stages[0].with.source",
        "unresolved $(params.src)",
        "declare 'src'",
    ),
    (
        "estimator outside allowlist",
        mutate("spec/stages/2/with", {"estimator": "os.system"}),
        "spec.stages[2].with.estimator",
        "outside the allowed scikit-learn families",
        "",
    ),
    (
        "uses and image",
        mutate("spec/stages/0/image", "busybox"),
        "spec.stages[0]",
        "exactly one of `uses`",
        "",
    ),
    (
        "bad stage name",
        mutate("spec/stages/0/name", "Ingest_1"),
        "spec.stages[0].name",
        "should match pattern",
        "",
    ),
    ("unknown spec field", mutate("spec/stagez", []), "spec.stagez", "unknown field", ""),
    (
        "bad cron",
        mutate("spec/schedule", "every day"),
        "spec.schedule",
        "invalid cron expression",
        "five fields",
    ),
]


@pytest.mark.parametrize(("doc", "path", "message", "fix"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problem(doc: dict[str, Any], path: str, message: str, fix: str) -> None:
    problems = check_document(doc)
    assert any(p.path == path and message in p.message and fix in p.fix for p in problems), problems


def test_option_from_a_param_without_default_is_not_flagged() -> None:
    # `est` has no default: its value is only known at run time.
    assert not [p for p in check_document(GOOD) if "estimator" in p.path]


def test_run_params_must_be_declared_and_complete() -> None:
    spec = PipelineSpec.model_validate(GOOD["spec"])
    with pytest.raises(ValueError, match="'est' has no default"):
        resolve_params(spec, {})
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        resolve_params(spec, {"est": "x", "nope": "1"})
    assert resolve_params(spec, {"est": "x"}) == {"acc": "0.9", "est": "x"}


def test_inline_run_spec_is_checked_with_its_path() -> None:
    run = {
        "kind": "PipelineRun",
        "metadata": {"name": "r"},
        "spec": {
            "pipelineSpec": mutate("spec/stages/1/uses", "nope")["spec"],
            "params": {"est": "sklearn.tree.DecisionTreeClassifier"},
        },
    }
    problems = check_document(run)
    assert [p.path for p in problems] == ["spec.pipelineSpec.stages[1].uses"]


def test_unknown_kind() -> None:
    assert check_document({"kind": "Pipe"})[0].path == "kind"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        pytest.param("breast-cancer", True, id="plain"),
        pytest.param("team.breast-cancer", True, id="dotted"),
        pytest.param("a" * 253, True, id="253-characters"),
        pytest.param("../x", False, id="escapes-the-store"),
        pytest.param("a/b", False, id="a-sub-folder"),
        pytest.param("a" * 300, False, id="300-characters"),
        pytest.param("Breast", False, id="uppercase"),
        pytest.param("-x", False, id="leading-dash"),
        pytest.param("", False, id="missing"),
    ],
)
def test_metadata_name_is_a_dns_subdomain(name: str, ok: bool) -> None:
    problems = check_document(mutate("metadata/name", name))
    assert (problems == []) is ok
    if not ok:
        assert [p.path for p in problems] == ["metadata.name"]
        assert "DNS-1123" in problems[0].fix or "name the resource" in problems[0].fix


def test_a_generated_name_may_be_empty() -> None:
    doc = mutate("metadata", {"generateName": "p-"})
    assert check_document(doc) == []
