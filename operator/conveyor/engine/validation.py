"""Checks beyond the schema: every problem names the field path and says how to fix it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from conveyor.api.pipeline import Pipeline, PipelineSpec
from conveyor.api.pipelinerun import PipelineRun
from conveyor.api.stages import BUILTIN_OPTIONS, CLASSIFICATION_METRICS, REGRESSION_METRICS
from conveyor.engine.dag import find_cycle
from conveyor.engine.params import UnresolvedParam, references, substitute
from conveyor.engine.schedule import ScheduleError, normalize, zone
from conveyor.errors import UserError

KINDS = ("Pipeline", "PipelineRun", "ModelDeployment")


def kind_model(kind: str) -> type[BaseModel]:
    """The model of a kind; ModelDeployment's (the serving models) imported only when asked
    for: `conveyor run` never needs it."""
    if kind == "ModelDeployment":
        from conveyor.api.modeldeployment import ModelDeployment

        return ModelDeployment
    return Pipeline if kind == "Pipeline" else PipelineRun


# Stands in for a declared parameter that has no default when checking options offline.
_PLACEHOLDER = "\x00param"


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" (fix: {self.fix})" if self.fix else "")


class InvalidResource(UserError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def loc_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".")


def pydantic_problems(err: ValidationError, prefix: str) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p))
        msg = e["msg"].removeprefix("Value error, ")
        fix = ""
        if e["type"] == "extra_forbidden":
            msg, fix = "unknown field", "remove it or check its spelling"
        elif e["type"] == "missing":
            msg, fix = "required field is missing", "add it"
        problems.append(Problem(loc_path(prefix, loc), msg, fix))
    return problems


def check_document(doc: Mapping[str, Any]) -> list[Problem]:
    """All problems of one resource document."""
    kind = doc.get("kind")
    if kind not in KINDS:
        return [Problem("kind", f"unknown kind {kind!r}", "use one of " + ", ".join(KINDS))]
    try:
        obj = kind_model(kind).model_validate(doc)
    except ValidationError as err:
        return pydantic_problems(err, "")
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    named = check_name(str(meta.get("name") or ""), generated=bool(meta.get("generateName")))
    if named:
        return named
    if isinstance(obj, Pipeline):
        return check_pipeline_spec(obj.spec, "spec")
    if isinstance(obj, PipelineRun) and obj.spec.pipeline_spec is not None:
        problems = check_pipeline_spec(obj.spec.pipeline_spec, "spec.pipelineSpec")
        return problems + check_run_params(obj.spec.pipeline_spec, obj.spec.params)
    return []


DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_NAME = 253


def check_name(name: str, generated: bool = False) -> list[Problem]:
    """`metadata.name` as Kubernetes accepts it (a DNS-1123 subdomain): the name is also a
    folder of the store, so `a/b` or `../x` would hide or escape runs. Empty only when the
    document asks for a generated name."""
    if not name:
        if generated:
            return []
        return [Problem("metadata.name", "missing", "name the resource, e.g. metadata.name: my-pipeline")]
    if len(name) > MAX_NAME or not DNS1123_SUBDOMAIN.match(name):
        return [
            Problem(
                "metadata.name",
                f"{name[:80]!r} is not a valid name ({len(name)} characters)",
                f"use at most {MAX_NAME} lowercase letters, digits, '-' and '.', starting and "
                "ending with a letter or digit (a DNS-1123 subdomain, as Kubernetes requires)",
            )
        ]
    return []


def check_pipeline_spec(spec: PipelineSpec, prefix: str) -> list[Problem]:
    problems: list[Problem] = []
    names = [s.name for s in spec.stages]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            problems.append(
                Problem(
                    f"{prefix}.stages[{i}].name",
                    f"duplicate stage name {name!r}",
                    "give every stage a unique name",
                )
            )
        seen.add(name)
    for i, stage in enumerate(spec.stages):
        for j, dep in enumerate(stage.depends_on):
            if dep not in seen:
                problems.append(
                    Problem(
                        f"{prefix}.stages[{i}].dependsOn[{j}]",
                        f"unknown stage {dep!r}",
                        "name one of: " + ", ".join(names),
                    )
                )
    edges = {s.name: s.depends_on for s in spec.stages}
    cycle = find_cycle(edges)
    if cycle:
        index = names.index(cycle[0])
        problems.append(
            Problem(
                f"{prefix}.stages[{index}].dependsOn",
                "cycle: " + " -> ".join(cycle),
                "remove one of these dependencies",
            )
        )
    problems += _check_schedule(spec, prefix)
    declared = {p.name: (p.default if p.default is not None else _PLACEHOLDER) for p in spec.params}
    for i, stage in enumerate(spec.stages):
        problems += _check_stage(stage.model_dump(by_alias=True), declared, f"{prefix}.stages[{i}]")
    if not cycle:
        problems += _check_gates(spec, prefix, declared)
    return problems


TASK_METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}


def _check_gates(spec: PipelineSpec, prefix: str, declared: dict[str, str]) -> list[Problem]:
    """An evaluate stage's gate may only name metrics its model's task produces. The task is
    known when a train stage upstream sets `task` (it wins, as in the stage), else a transform
    stage upstream does; with `task: auto` it depends on the data, so either family passes
    here and the stage itself refuses a metric it did not measure."""
    problems = []
    for i, stage in enumerate(spec.stages):
        if stage.uses != "evaluate":
            continue
        try:
            gate = substitute(stage.options, declared).get("gate")
        except UnresolvedParam:
            continue  # reported with the stage
        task = _task_upstream(spec, stage.name)
        if task is None:
            continue
        known = TASK_METRICS[task[0]]
        conditions = gate if isinstance(gate, list) else [gate]
        for j, condition in enumerate(conditions):
            metric = condition.get("metric") if isinstance(condition, dict) else None
            if metric in known or not any(metric in m for m in TASK_METRICS.values()):
                continue  # fine, or not a metric at all (the options' own check says so)
            where = f"{prefix}.stages[{i}].with.gate" + (f"[{j}]" if isinstance(gate, list) else "")
            problems.append(
                Problem(
                    f"{where}.metric",
                    f"{metric!r} is not measured for {task[0]} (stage {task[1]!r} sets task: {task[0]})",
                    "use one of: " + ", ".join(known),
                )
            )
    return problems


def _task_upstream(spec: PipelineSpec, name: str) -> tuple[str, str] | None:
    """(task, the stage that sets it) for the model an evaluate stage gets, when an upstream
    train stage, else transform stage, sets one task; None when unset, a parameter or mixed."""
    edges = {s.name: s.depends_on for s in spec.stages}
    upstream: set[str] = set()
    todo = list(edges.get(name, []))
    while todo:
        dep = todo.pop()
        if dep in edges and dep not in upstream:
            upstream.add(dep)
            todo += edges[dep]
    for uses in ("train", "transform"):
        found = {
            (s.options.get("task"), s.name)
            for s in spec.stages
            if s.name in upstream and s.uses == uses and s.options.get("task") in TASK_METRICS
        }
        if len({task for task, _ in found}) == 1:
            return min(found)  # type: ignore[return-value]
        if found:
            return None
    return None


def _check_schedule(spec: PipelineSpec, prefix: str) -> list[Problem]:
    """The schedule and its time zone as a CronJob would take them (`engine/schedule.py`)."""
    problems = []
    if spec.schedule is not None:
        try:
            normalize(spec.schedule)
        except ScheduleError as err:
            fix = "use five fields, e.g. '0 3 * * *', or a macro such as @daily"
            problems.append(Problem(f"{prefix}.schedule", f"invalid cron expression: {err}", fix))
    if spec.time_zone is not None:
        try:
            zone(spec.time_zone)
        except ScheduleError as err:
            problems.append(
                Problem(f"{prefix}.timeZone", str(err), "e.g. UTC, Europe/Paris, America/New_York")
            )
    return problems


def _check_stage(stage: dict[str, Any], declared: dict[str, str], prefix: str) -> list[Problem]:
    problems = [
        Problem(
            f"{prefix}.{path.lstrip('.')}",
            f"unresolved $(params.{name})",
            f"declare {name!r} under spec.params or fix the reference",
        )
        for name, path in references({k: stage.get(k) for k in ("with", "command", "args", "env", "image")})
        if name not in declared
    ]
    uses = stage.get("uses")
    if uses is None:
        return problems
    if uses not in BUILTIN_OPTIONS:
        return [
            *problems,
            Problem(
                f"{prefix}.uses",
                f"unknown built-in stage {uses!r}",
                "use one of: " + ", ".join(BUILTIN_OPTIONS) + ", or `image` for a custom stage",
            ),
        ]
    if problems:
        return problems
    options = substitute(stage.get("with") or {}, declared)
    try:
        BUILTIN_OPTIONS[uses].model_validate(options)
    except ValidationError as err:
        problems += [
            p
            for p in pydantic_problems(err, f"{prefix}.with")
            if _PLACEHOLDER not in str(_value_at(options, p.path.split(".with", 1)[1]))
        ]
    return problems


def _value_at(options: Any, path: str) -> Any:
    value = options
    for part in path.replace("[", ".").replace("]", "").split("."):
        if not part:
            continue
        try:
            value = value[int(part)] if isinstance(value, list) else value[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return value


def check_run_params(spec: PipelineSpec, given: Mapping[str, str]) -> list[Problem]:
    declared = {p.name for p in spec.params}
    problems = [
        Problem(
            f"spec.params.{name}",
            f"the pipeline has no parameter {name!r}",
            "declare it in the pipeline or remove it; known: " + ", ".join(sorted(declared)),
        )
        for name in given
        if name not in declared
    ]
    problems += [
        Problem(
            f"spec.params.{p.name}",
            f"parameter {p.name!r} has no default and is not set",
            f"set it, e.g. --param {p.name}=VALUE",
        )
        for p in spec.params
        if p.default is None and p.name not in given
    ]
    return problems


def resolve_params(spec: PipelineSpec, given: Mapping[str, str]) -> dict[str, str]:
    """Run parameters over pipeline defaults; raises InvalidResource when incomplete."""
    problems = check_run_params(spec, given)
    if problems:
        raise InvalidResource(problems)
    values = {p.name: p.default for p in spec.params if p.default is not None}
    return {**values, **given}


def resolve_options(spec: PipelineSpec, params: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Stage name -> its `with:` options with parameters substituted."""
    out = {}
    for i, stage in enumerate(spec.stages):
        try:
            out[stage.name] = substitute(stage.options, params)
        except UnresolvedParam as err:
            raise InvalidResource(
                [Problem(f"spec.stages[{i}].with{err.path}", f"unresolved $(params.{err.name})")]
            ) from None
    return out
