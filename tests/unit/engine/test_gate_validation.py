"""`validate` checks an evaluate stage's gate before anything trains: every condition names a
metric the stage measures, and one the model's task produces when the pipeline sets the task."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.engine.validation import check_document


def pipeline(
    gate: Any, transform: dict[str, Any] | None = None, train: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {
            "params": [{"name": "metric", "default": "r2"}],
            "stages": [
                {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
                {"name": "transform", "uses": "transform", "dependsOn": ["ingest"], "with": transform or {}},
                {
                    "name": "train",
                    "uses": "train",
                    "dependsOn": ["transform"],
                    "with": {"estimator": "sklearn.tree.DecisionTreeClassifier", **(train or {})},
                },
                {"name": "evaluate", "uses": "evaluate", "dependsOn": ["train"], "with": {"gate": gate}},
            ],
        },
    }


ACC = {"metric": "accuracy", "min": 0.9}
AUC = {"metric": "roc_auc", "min": 0.95}
R2 = {"metric": "r2", "min": 0.5}
CLS = {"task": "classification"}
REG = {"task": "regression"}
GATE = "spec.stages[3].with.gate"


@pytest.mark.parametrize(
    ("doc", "problems"),
    [
        pytest.param(pipeline(ACC), [], id="single form"),
        pytest.param(pipeline([ACC, AUC], CLS), [], id="several conditions, all classification"),
        pytest.param(
            pipeline([ACC, {"metric": "acuracy", "min": 0.9}]),
            [(f"{GATE}[1].metric", "measures no metric 'acuracy'; use one of accuracy, precision", "")],
            id="misspelled: caught before training, with the names it measures",
        ),
        pytest.param(
            pipeline([ACC, R2], CLS),
            [
                (
                    f"{GATE}[1].metric",
                    "'r2' is not measured for classification (stage 'transform'",
                    "use one of: accuracy",
                )
            ],
            id="regression metric, transform says classification",
        ),
        pytest.param(
            pipeline(ACC, None, REG),
            [
                (
                    f"{GATE}.metric",
                    "'accuracy' is not measured for regression (stage 'train'",
                    "use one of: rmse, mae, r2",
                )
            ],
            id="single form, train says regression",
        ),
        pytest.param(pipeline(R2, CLS, REG), [], id="train's task wins over transform's, as in the stage"),
        pytest.param(
            pipeline([ACC, R2]), [], id="task auto: either family, the stage checks what it measured"
        ),
        pytest.param(
            pipeline({"metric": "$(params.metric)", "min": 0.5}, CLS),
            [(f"{GATE}.metric", "'r2' is not measured for classification", "use one of")],
            id="a parameter's default is checked",
        ),
        pytest.param(pipeline([]), [(GATE, "a gate needs at least one condition", "")], id="empty list"),
        pytest.param(
            pipeline([{"metric": "accuracy"}]),
            [(f"{GATE}[0]", "a gate needs `min` or `max`", "")],
            id="no bound",
        ),
    ],
)
def test_gate_metrics(doc: dict[str, Any], problems: list[tuple[str, str, str]]) -> None:
    found = check_document(doc)
    assert len(found) == len(problems), found
    for problem, (path, message, fix) in zip(found, problems, strict=True):
        assert problem.path == path and message in problem.message and fix in problem.fix, problem
