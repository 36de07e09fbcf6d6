"""Reading resource files: YAML documents -> typed resources, with file-named errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conveyor.api.pipeline import Pipeline
from conveyor.api.pipelinerun import PipelineRun
from conveyor.engine.validation import InvalidResource, Problem, check_document, check_run_params
from conveyor.errors import UserError


@dataclass
class Document:
    path: Path
    index: int
    body: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.path}" + (f"#{self.index}" if self.index else "")


class ResourceFileError(UserError):
    pass


def load_documents(path: Path) -> list[Document]:
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except FileNotFoundError:
        raise ResourceFileError(f"{path}: no such file") from None
    except yaml.YAMLError as err:
        raise ResourceFileError(f"{path}: not valid YAML: {err}") from None
    out = []
    for i, body in enumerate(d for d in docs if d is not None):
        if not isinstance(body, dict):
            raise ResourceFileError(f"{path}: document {i} is not a mapping")
        out.append(Document(path, i, body))
    return out


def expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        files += sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p]
    return files


def validate_files(paths: list[Path]) -> list[tuple[str, Problem]]:
    """Every problem of every document, with runs checked against pipelines among the files."""
    docs = [d for f in expand(paths) for d in load_documents(f)]
    problems = [(d.where, p) for d in docs for p in check_document(d.body)]
    pipelines = {d.body.get("metadata", {}).get("name"): d for d in docs if d.body.get("kind") == "Pipeline"}
    for d in docs:
        if d.body.get("kind") != "PipelineRun" or any(w == d.where for w, _ in problems):
            continue
        run = PipelineRun.model_validate(d.body)
        ref = run.spec.pipeline_ref
        if ref and ref.name in pipelines and not any(w == pipelines[ref.name].where for w, _ in problems):
            spec = Pipeline.model_validate(pipelines[ref.name].body).spec
            problems += [(d.where, p) for p in check_run_params(spec, run.spec.params)]
    return problems


@dataclass
class RunRequest:
    pipeline: Pipeline
    run: PipelineRun | None


def load_run_request(path: Path) -> RunRequest:
    """A Pipeline file, or a PipelineRun file whose Pipeline is inline, in the same file or
    in the same folder."""
    problems = validate_files([path])
    if problems:
        raise InvalidResource([Problem(f"{w}: {p.path}", p.message, p.fix) for w, p in problems])
    docs = load_documents(path)
    runs = [PipelineRun.model_validate(d.body) for d in docs if d.body.get("kind") == "PipelineRun"]
    pipes = [Pipeline.model_validate(d.body) for d in docs if d.body.get("kind") == "Pipeline"]
    run = runs[0] if runs else None
    if run is None:
        if not pipes:
            raise ResourceFileError(f"{path}: no Pipeline or PipelineRun in it")
        return RunRequest(pipes[0], None)
    if run.spec.pipeline_spec is not None:
        meta = {"name": run.metadata.name or "inline", "namespace": run.metadata.namespace}
        return RunRequest(Pipeline(metadata=meta, spec=run.spec.pipeline_spec), run)
    assert run.spec.pipeline_ref is not None
    wanted = run.spec.pipeline_ref.name
    for candidate in [path, *expand([path.parent])]:
        for d in load_documents(candidate):
            if d.body.get("kind") == "Pipeline" and d.body.get("metadata", {}).get("name") == wanted:
                return RunRequest(Pipeline.model_validate(d.body), run)
    raise ResourceFileError(
        f"{path}: spec.pipelineRef.name: no Pipeline {wanted!r} in "
        f"{path.parent}/ (put its YAML beside the run)"
    )
