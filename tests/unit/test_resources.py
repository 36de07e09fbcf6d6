"""Reading resource files: alias bombs refused before they are built, folders searched to the
bottom, other APIs' documents skipped, and `conveyor validate` counting files, not arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.cli import main
from conveyor.resources import ResourceFileError, load_documents, validate_files
from tests.conftest import EXAMPLES

PIPELINE = (EXAMPLES / "breast-cancer" / "pipeline.yaml").read_text()


def bomb(levels: int) -> str:
    """A "billion laughs" document: each level is nine aliases of the one above."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(7))  # 340 bytes that stand for ~5 million nodes
    with pytest.raises(ResourceFileError, match=r"bomb\.yaml: document 0: its YAML aliases expand it to"):
        load_documents(path)


def test_modest_aliases_still_load(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text("common: &c {retries: 2, timeoutSeconds: 60}\nstages: [*c, *c, *c]\n")
    (doc,) = load_documents(path)
    assert doc.body["stages"] == [{"retries": 2, "timeoutSeconds": 60}] * 3


def test_an_invalid_file_in_a_subfolder_is_found(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(PIPELINE)
    (tmp_path / "team" / "nested").mkdir(parents=True)
    bad = tmp_path / "team" / "nested" / "bad.yml"
    bad.write_text(PIPELINE.replace("kind: Pipeline", "kind: Pipelin"))
    problems = validate_files([tmp_path])
    assert [where for where, _ in problems] == [str(bad)]


def test_an_empty_folder_is_an_error_not_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("no YAML here")
    assert main(["validate", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "no .yaml or .yml files in this folder or below it" in err
    assert "valid" not in err


def test_validate_counts_files_not_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        (tmp_path / "sub" / f"{name}.yaml").write_text(
            PIPELINE.replace("name: breast-cancer", f"name: {name}")
        )
    assert main(["validate", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "3 file(s) valid"


def test_other_apis_are_skipped_but_a_conveyor_typo_is_not(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: x}\n"
    )
    typo = tmp_path / "typo.yaml"
    typo.write_text("apiVersion: conveyor.dev/v1alpha1\nkind: Pipelines\nmetadata: {name: x}\n")
    problems = validate_files([tmp_path])
    assert {where for where, _ in problems} == {str(typo)}


def test_the_examples_folder_validates_as_the_readme_says() -> None:
    assert validate_files([EXAMPLES]) == []


def test_a_file_too_large_to_be_a_resource_is_refused_before_parsing(tmp_path: Path) -> None:
    """A 10 MB pipeline took ~55 s and ~700 MB to validate (PyYAML builds Python objects for
    every node); no API server would store it. Refused from its size, reading 1.5 MiB at most."""
    path = tmp_path / "big.yaml"
    columns = "".join(f"      c{i:07d}: {{min: 0, max: {i}}}\n" for i in range(300_000))
    path.write_text(PIPELINE + "# expectations\n#" + columns.replace("\n", "\n#"))
    assert path.stat().st_size > 10_000_000
    with pytest.raises(ResourceFileError, match=r"big\.yaml: 1\d\.\d MB, over the 1.5 MiB Conveyor reads"):
        load_documents(path)


def test_a_file_under_the_limit_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE + "#" + "x" * 1_000_000 + "\n")
    assert load_documents(path)[0].body["kind"] == "Pipeline"
