"""The CLI's kubectl-like conventions: `-o json|yaml|wide|name`, `-n NAMESPACE`, `crds
--output-dir`, shell completion, colour only on a terminal, errors that name the option used."""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from conveyor import __version__
from conveyor.api.pipelinerun import ModelRecord, StageStatus
from conveyor.artifacts import layout
from conveyor.artifacts.store import LocalStore
from conveyor.cli import main
from tests.conftest import EXAMPLES

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RUNS = (("default", "p", "p-1"), ("ml", "p", "p-2"), ("ml", "q", "q-1"))


def _store(tmp_path: Path) -> Path:
    """Three runs: p-1 in namespace default, p-2 and q-1 in ml; p-2 failed."""
    root = tmp_path / "store"
    for i, (namespace, pipeline, run) in enumerate(RUNS):
        failed = run == "p-2"
        record = layout.RunRecord(
            namespace=namespace,
            pipeline=pipeline,
            run=run,
            phase="Failed" if failed else "Succeeded",
            message="stage train failed: boom" if failed else "",
            spec_digest="0" * 64,
            params={},
            version="test",
            start_time=T + timedelta(minutes=i),
            completion_time=T + timedelta(minutes=i, seconds=12),
            trigger="manual",
            stages=[StageStatus(name="train", phase="Failed" if failed else "Succeeded")],
            model=None if failed else ModelRecord(uri="file:///m", sha256="s", metrics={"accuracy": 0.9}),
        )
        layout.write_run_record(LocalStore(root), record)
    return root


def _out(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 0) -> str:
    assert main(argv) == code
    return capsys.readouterr().out


def test_runs_output_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(_store(tmp_path))
    assert _out(capsys, ["runs", "--store", store, "-o", "name"]).split() == ["p-1", "p-2", "q-1"]
    as_json = json.loads(_out(capsys, ["runs", "--store", store, "-o", "json"]))
    assert [(r["namespace"], r["run"], r["phase"]) for r in as_json] == [
        ("default", "p-1", "Succeeded"),
        ("ml", "p-2", "Failed"),
        ("ml", "q-1", "Succeeded"),
    ]
    assert as_json[0]["startTime"] == "2026-03-01T12:00:00Z"  # the record's own (camelCase) form
    assert yaml.safe_load(_out(capsys, ["runs", "--store", store, "-o", "yaml"])) == as_json
    wide = [line.split("\t") for line in _out(capsys, ["runs", "--store", store, "-o", "wide"]).splitlines()]
    assert wide[1] == [
        "p-2",
        "p",
        "Failed",
        "2026-03-01 12:01:00",
        "",
        "",
        "ml",
        "12.0s",
        "manual",
        "stage train failed: boom",
    ]


def test_runs_and_show_take_a_namespace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(_store(tmp_path))
    assert _out(capsys, ["runs", "--store", store, "-n", "ml", "-o", "name"]).split() == ["p-2", "q-1"]
    shown = yaml.safe_load(_out(capsys, ["show", "p-2", "--store", store, "-n", "ml", "-o", "yaml"]))
    assert (shown["namespace"], shown["run"], shown["message"]) == ("ml", "p-2", "stage train failed: boom")
    assert main(["show", "p-2", "--store", store, "-n", "default"]) == 1
    assert "no run 'p-2'" in capsys.readouterr().err
    assert _out(capsys, ["show", "q-1", "--store", store, "-o", "name"]) == "q-1\n"


def test_runs_says_when_a_store_holds_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --store used to print nothing at all, as an empty store does."""
    assert main(["runs", "--store", str(tmp_path / "typo")]) == 0
    assert capsys.readouterr() == ("", f"no runs in {tmp_path / 'typo'}\n")


@pytest.mark.parametrize(
    "command", ["runs", "show x", "models p", "approve x", "serve --pipeline p", "run f"]
)
def test_a_namespace_is_checked_as_kubernetes_does(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "-n", "../x"])
    assert exit_.value.code == 2
    assert "'../x' is not a namespace name" in capsys.readouterr().err


def test_validate_output_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: conveyor.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec: {stages: []}\n"
    )
    penguins = EXAMPLES / "penguins" / "pipeline.yaml"
    assert _out(capsys, ["validate", str(penguins), "-o", "name"]) == "pipeline.conveyor.dev/penguins\n"
    assert main(["validate", str(bad), str(penguins), "-o", "json"]) == 1
    assert json.loads(capsys.readouterr().out) == {
        "files": [str(bad), str(penguins)],
        "resources": ["pipeline.conveyor.dev/p", "pipeline.conveyor.dev/penguins"],
        "problems": [
            {
                "file": str(bad),
                "path": "spec.stages",
                "message": "List should have at least 1 item after validation, not 0",
                "fix": "",
            }
        ],
    }


def test_crds_output_dir_and_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [
        "conveyor.dev_modeldeployments.yaml",
        "conveyor.dev_pipelineruns.yaml",
        "conveyor.dev_pipelines.yaml",
    ]
    assert main(["crds", "--output-dir", str(tmp_path / "new")]) == 0
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == files
    capsys.readouterr()
    assert main(["crds", "-o", str(tmp_path / "old")]) == 0  # the old spelling still works
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == files
    assert "deprecated: write `crds --output-dir" in capsys.readouterr().err
    docs = list(yaml.safe_load_all(_out(capsys, ["crds", "-o", "yaml"])))
    assert sorted(d["metadata"]["name"] for d in docs) == [
        "modeldeployments.conveyor.dev",
        "pipelineruns.conveyor.dev",
        "pipelines.conveyor.dev",
    ]
    assert json.loads(_out(capsys, ["crds", "-o", "json"]))["items"] == docs
    assert "customresourcedefinition.apiextensions.k8s.io/pipelines.conveyor.dev\n" in _out(
        capsys, ["crds", "-o", "name"]
    )


RENDER = ["render", "-f", str(EXAMPLES / "breast-cancer" / "pipeline.yaml")]


def test_render_output_formats_and_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*RENDER, "--store", "s3://mlops/conveyor", "-n", "ml"]
    assert _out(capsys, [*argv, "-o", "name"]).split() == [
        f"job.batch/breast-cancer-run-{s}" for s in ("ingest", "validate", "transform", "train", "evaluate")
    ]
    listed = json.loads(_out(capsys, [*argv, "-o", "json"]))
    assert listed["kind"] == "List"
    assert {job["metadata"]["namespace"] for job in listed["items"]} == {"ml"}
    assert list(yaml.safe_load_all(_out(capsys, argv))) == listed["items"]


@pytest.mark.parametrize(
    ("store", "message"),
    [
        (
            "/tmp/folder",
            "--store '/tmp/folder': the Jobs reach their store over S3: write s3://BUCKET[/PREFIX]",
        ),
        ("s3://ab", "--store 's3://ab': bucket: String should have at least 3 characters"),
    ],
)
def test_render_blames_the_store_option_it_was_given(
    store: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to say `CONVEYOR_STORE` (unset here) for a bad `--store`."""
    monkeypatch.delenv("CONVEYOR_STORE", raising=False)
    assert main([*RENDER, "--store", store]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"


@pytest.mark.parametrize(
    "command",
    [f"run {EXAMPLES / 'breast-cancer' / 'pipeline.yaml'}", "runs", "show x", "models p", "approve x"],
    ids=lambda c: c.split()[0],
)
def test_a_bad_store_option_is_named(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command.split(), "--store", "ftp://x"]) == 1
    assert capsys.readouterr().err.startswith("error: --store: unsupported store 'ftp://x'")


def test_models_output_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.cli.test_models import _store as promoted

    store = str(promoted(tmp_path).root)
    assert _out(capsys, ["models", "p", "--store", store, "-o", "name"]).split() == ["1", "2"]
    rows = yaml.safe_load(_out(capsys, ["models", "p", "--store", store, "-o", "yaml"]))
    assert [(r["version"], r["run"], r["champion"]) for r in rows] == [(1, "r1", False), (2, "r2", True)]
    wide = _out(capsys, ["models", "p", "--store", store, "-o", "wide"]).splitlines()
    assert wide[1].split("\t")[-3:] == ["", f"{store}/default/p/r2/train/model.skops", "r2"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"conveyor {__version__}\n"


def _complete(*words: str) -> list[str]:
    """What bash offers for the last of `words` (typed after `conveyor`), from the script that
    `conveyor completion bash` prints."""
    script = subprocess.run(
        [sys.executable, "-m", "conveyor", "completion", "bash"], capture_output=True, text=True, check=True
    ).stdout
    argv = ("conveyor", *words)
    line = " ".join(argv)
    probe = (
        f"{script}\nCOMP_WORDS=({' '.join(map(shlex.quote, argv))}); COMP_CWORD={len(argv) - 1}; "
        f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}\n"
        f"_shtab_conveyor conveyor {shlex.quote(argv[-1])} {shlex.quote(argv[-2])}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    return sorted(proc.stdout.split())


def test_bash_completion_offers_commands_options_and_formats() -> None:
    assert _complete("r") == ["reject", "render", "run", "runs"]
    assert {"--output", "--namespace", "--store"} <= set(_complete("runs", "--"))
    assert _complete("runs", "-o", "") == ["json", "name", "wide", "yaml"]


def test_zsh_completion_script_names_every_command() -> None:
    """zsh is not installed here, so the script is read, not run."""
    script = subprocess.run(
        [sys.executable, "-m", "conveyor", "completion", "zsh"], capture_output=True, text=True, check=True
    ).stdout
    assert script.startswith("#compdef conveyor")
    for command in ("run", "runs", "show", "models", "render", "completion"):
        assert re.search(rf"\b{command}\b", script), command


COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])[;m]")


def _show_on_a_terminal(store: Path, **env: str) -> str:
    """`conveyor show` with its stdout on a pseudo-terminal; what it wrote there (read while it
    runs: a full terminal buffer would block it)."""
    leader, follower = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environ.update(TERM="xterm-256color", COLUMNS="120", **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "show", "p-1", "--store", str(store)],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env=environ,
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other side is closed and everything was read
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(60) == 0
    return out.decode()


def test_colour_only_on_a_terminal_and_never_with_no_color(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert COLOUR.search(_show_on_a_terminal(store)), "a terminal gets colour"
    plain = _show_on_a_terminal(store, NO_COLOR="1")
    assert "Succeeded" in plain and not COLOUR.search(plain)
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    for argv in (["show", "p-1"], ["runs"], ["runs", "-o", "wide"]):
        piped = subprocess.run(
            [sys.executable, "-m", "conveyor", *argv, "--store", str(store)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert piped.returncode == 0 and "p-1" in piped.stdout
        assert "\x1b" not in piped.stdout + piped.stderr, argv


@pytest.mark.parametrize(
    "argv",
    [["crds", "--output-dir", "/dev/null/x"], ["models", "p", "--store", "/dev/null"]],
    ids=["crds", "models"],
)
def test_unexpected_errors_are_one_line_unless_debug(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "conveyor", *argv], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "(run with --debug for the traceback)" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", *argv, "--debug"], capture_output=True, text=True
    )
    assert "Traceback" in proc.stderr
