from datetime import UTC, datetime, timedelta

from conveyor.api.common import Condition
from conveyor.engine.cache import cache_key
from conveyor.engine.conditions import set_condition
from conveyor.engine.invocation import ArtifactRef
from conveyor.engine.names import child_name, standard_labels

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_child_name_short_is_plain() -> None:
    assert child_name("run-1", "train") == "run-1-train"


def test_child_name_long_is_truncated_with_a_stable_hash() -> None:
    name = child_name("r" * 60, "evaluate")
    assert len(name) == 63
    assert name == child_name("r" * 60, "evaluate")
    assert name != child_name("r" * 60, "evaluatf")


def test_standard_labels() -> None:
    labels = standard_labels(component="stage", instance="r1", pipeline="p", run="r1", stage="s")
    assert labels == {
        "app.kubernetes.io/name": "conveyor",
        "app.kubernetes.io/instance": "r1",
        "app.kubernetes.io/component": "stage",
        "app.kubernetes.io/part-of": "conveyor",
        "app.kubernetes.io/managed-by": "conveyor-operator",
        "conveyor.dev/pipeline": "p",
        "conveyor.dev/pipelinerun": "r1",
        "conveyor.dev/stage": "s",
    }


def _ref(sha: str) -> ArtifactRef:
    return ArtifactRef(uri="file:///x", sha256=sha, bytes=1)


def test_cache_key_depends_on_what_changes_results_only() -> None:
    stage = {"uses": "train", "retries": 0, "timeoutSeconds": 10}
    base = cache_key(stage, {"C": 1}, {"t": {"train": _ref("a")}}, "v1")
    assert base == cache_key(
        {**stage, "retries": 3, "timeoutSeconds": 99}, {"C": 1}, {"t": {"train": _ref("a")}}, "v1"
    )
    assert base != cache_key(stage, {"C": 2}, {"t": {"train": _ref("a")}}, "v1")
    assert base != cache_key(stage, {"C": 1}, {"t": {"train": _ref("b")}}, "v1")
    assert base != cache_key(stage, {"C": 1}, {"t": {"train": _ref("a")}}, "v2")
    assert base != cache_key(stage, {"C": 1}, {"t": {"train": _ref("a")}}, "v1", {"src": "x"})


def test_transition_time_moves_only_when_status_flips() -> None:
    c1 = Condition(type="Ready", status="False", reason="InvalidSpec", message="a")
    conds = set_condition([], c1, T0)
    assert conds[0].last_transition_time == T0
    c2 = c1.model_copy(update={"message": "b"})
    conds = set_condition(conds, c2, T0 + timedelta(minutes=1))
    assert conds[0].last_transition_time == T0 and conds[0].message == "b"
    c3 = Condition(type="Ready", status="True", reason="Valid")
    conds = set_condition(conds, c3, T0 + timedelta(minutes=2))
    assert conds[0].last_transition_time == T0 + timedelta(minutes=2)
    assert len(conds) == 1


def test_merge_patch_nulls_what_is_gone() -> None:
    from conveyor.engine.patches import merge_patch

    old = {"phase": "Running", "currentStage": "train", "model": {"uri": "a", "extra": 1}, "stages": [1, 2]}
    new = {"phase": "Succeeded", "model": {"uri": "a"}, "stages": [1, 2, 3]}
    assert merge_patch(old, new) == {
        "currentStage": None,
        "phase": "Succeeded",
        "model": {"extra": None},
        "stages": [1, 2, 3],
    }
    assert merge_patch(new, new) == {}
