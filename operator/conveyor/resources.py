"""Reading resource files: YAML documents -> typed resources, with file-named errors.

YAML is parsed by libyaml (the C parser; a 9 MB file in well under a second rather than ~50 s)
into a node graph first, and refused before it is built into objects when its aliases would
expand it more than `MAX_ALIAS_EXPANSION` times over its own size (a "billion laughs" file of a
few hundred bytes would otherwise take minutes and gigabytes to validate). Folders are searched
recursively for `.yaml` / `.yml` files; a folder with none is an error, not "valid".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conveyor.api.common import GROUP
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


Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_ALIAS_EXPANSION = 10  # expanded nodes per node written, beyond the first 10,000
# A Kubernetes object is at most 1.5 MiB (etcd's default --max-request-bytes), so a larger file
# cannot be applied as one resource; parsing YAML costs ~1-2 s of CPU per MB here.
MAX_FILE_BYTES = 3 * 2**19


def expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes `node` stands for with every alias expanded (shared nodes counted once per
    use; `memo` keeps it linear in the graph's size)."""
    key = id(node)
    if key not in memo:
        memo[key] = 0  # a recursive alias refers back to a node being measured: counted once
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(expanded_size(k, memo) + expanded_size(v, memo) for k, v in node.value)
        else:
            memo[key] = 1
    return memo[key]


def _parse(path: Path, text: str) -> list[Any]:
    loader = Loader(text)
    try:
        docs: list[Any] = []
        while loader.check_node():
            node = loader.get_node()
            memo: dict[int, int] = {}
            size = expanded_size(node, memo)
            if size > MAX_ALIAS_EXPANSION * len(memo) + 10_000:
                raise ResourceFileError(
                    f"{path}: document {len(docs)}: its YAML aliases expand it to {size:,} nodes "
                    f"from {len(memo):,} written; write the values out instead of aliasing them"
                )
            docs.append(loader.construct_document(node))
        return docs
    finally:
        loader.dispose()


def _read(path: Path) -> str:
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        size = path.stat().st_size
        raise ResourceFileError(
            f"{path}: {size / 1e6:.1f} MB, over the {MAX_FILE_BYTES / 2**20:g} MiB Conveyor reads, "
            "as a Kubernetes API server stores no larger object; keep large data (expectations, "
            "parameter grids, tables) in a file a stage reads, or split the file"
        )
    return data.decode()


def load_documents(path: Path) -> list[Document]:
    try:
        docs = _parse(path, _read(path))
    except FileNotFoundError:
        raise ResourceFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ResourceFileError(f"{path}: is a folder; pass a YAML file") from None
    except UnicodeDecodeError as err:
        raise ResourceFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ResourceFileError(f"{path}: not valid YAML: {err}") from None
    out = []
    for i, body in enumerate(d for d in docs if d is not None):
        if not isinstance(body, dict):
            raise ResourceFileError(f"{path}: document {i} is not a mapping")
        out.append(Document(path, i, body))
    return out


def expand(paths: list[Path]) -> list[Path]:
    """The YAML files named, and those in the folders named (and their sub-folders)."""
    files: list[Path] = []
    for p in paths:
        if not p.is_dir():
            files.append(p)
            continue
        found = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        if not found:
            raise ResourceFileError(f"{p}: no .yaml or .yml files in this folder or below it")
        files += found
    return files


def ours(body: dict[str, Any]) -> bool:
    """Whether a document is (or may be meant as) a Conveyor resource."""
    api_version = body.get("apiVersion")
    return not isinstance(api_version, str) or api_version.partition("/")[0] == GROUP


def validate_files(paths: list[Path]) -> list[tuple[str, Problem]]:
    """Every problem of every document, with runs checked against pipelines among the files."""
    return validate_expanded(expand(paths))


def validate_expanded(files: list[Path]) -> list[tuple[str, Problem]]:
    """`validate_files` for files already found by `expand`. Documents of other APIs (an Argo CD
    Application, a ConfigMap beside the pipelines) are not Conveyor's to judge and are skipped;
    one that claims Conveyor's group, or no apiVersion, is checked."""
    docs = [d for f in files for d in load_documents(f) if ours(d.body)]
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
    beside = sorted(f for f in path.parent.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
    for candidate in [path, *beside]:
        for d in load_documents(candidate):
            if d.body.get("kind") == "Pipeline" and d.body.get("metadata", {}).get("name") == wanted:
                return RunRequest(Pipeline.model_validate(d.body), run)
    raise ResourceFileError(
        f"{path}: spec.pipelineRef.name: no Pipeline {wanted!r} in "
        f"{path.parent}/ (put its YAML beside the run)"
    )
