"""The command line: help everywhere, clear errors without tracebacks, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.api.pipeline import Pipeline
from conveyor.cli import _pipeline_store, build_parser, main
from tests.conftest import EXAMPLES

COMMANDS = [
    "run",
    "validate",
    "crds",
    "completion",
    "stage",
    "render",
    "serve",
    "operator",
    "runs",
    "show",
    "models",
    "approve",
    "reject",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: conveyor " + command in capsys.readouterr().out


def test_parser_knows_every_command() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(COMMANDS)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            ["run", "p.yaml"],
            {
                "file": "p.yaml",
                "param": [],
                "store": None,
                "no_cache": False,
                "launch": "fork",
                "output": None,
                "namespace": None,
            },
            id="run-defaults",
        ),
        pytest.param(
            ["--debug", "run", "p.yaml", "-p", "a=1", "--param", "b=2", "--launch", "exec", "--no-cache"],
            {"param": ["a=1", "b=2"], "launch": "exec", "no_cache": True},
            id="run-options",
        ),
        pytest.param(["run", "p.yaml"], {"debug": False}, id="no-debug"),
        pytest.param(["run", "--debug", "p.yaml"], {"debug": True}, id="debug-after-the-command"),
        pytest.param(["--debug", "run", "p.yaml"], {"debug": True}, id="debug-before-the-command"),
        pytest.param(["validate", "a", "b"], {"files": ["a", "b"]}, id="validate"),
        pytest.param(["crds"], {"output": None, "output_dir": None}, id="crds"),
        pytest.param(["render", "-f", "a", "--file", "b"], {"file": ["a", "b"], "store": None}, id="render"),
        pytest.param(
            ["serve", "--model", "m"],
            {"model": "m", "store": ".conveyor", "port": 8000, "batching": True, "max_latency_ms": 0.0},
            id="serve-defaults",
        ),
        pytest.param(
            ["serve", "--no-batching", "--drift-method", "ks", "--max-body-bytes", "10"],
            {"batching": False, "drift_method": "ks", "max_body_bytes": 10},
            id="serve-options",
        ),
        pytest.param(
            ["operator", "-n", "a", "-n", "b"],
            {"namespace": ["a", "b"], "all_namespaces": False},
            id="operator",
        ),
        pytest.param(["runs"], {"store": ".conveyor"}, id="runs"),
        pytest.param(
            ["show", "r1", "--json", "--store", "s"], {"run": "r1", "output": "json", "store": "s"}, id="show"
        ),
    ],
)
def test_parser_reads_each_command(argv: list[str], expected: dict[str, object]) -> None:
    args = vars(build_parser().parse_args(argv))
    assert args["command"] == next(a for a in argv if not a.startswith("-"))
    assert {k: args[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("artifacts", "store"),
    [
        pytest.param(None, None, id="none"),
        pytest.param({"s3": {"bucket": "bkt"}}, "s3://bkt", id="bucket"),
        pytest.param({"s3": {"bucket": "bkt", "prefix": "runs"}}, "s3://bkt/runs", id="prefix"),
        pytest.param({"s3": {"bucket": "bkt", "prefix": "/runs/x/"}}, "s3://bkt/runs/x", id="slashes"),
    ],
)
def test_pipeline_store_uri(artifacts: dict[str, object] | None, store: str | None) -> None:
    spec: dict[str, object] = {
        "stages": [{"name": "a", "uses": "ingest", "with": {"source": "sklearn://iris"}}]
    }
    if artifacts is not None:
        spec["artifacts"] = artifacts
    body = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": spec,
    }
    assert _pipeline_store(Pipeline.model_validate(body)) == store


def test_validate_examples_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES / "breast-cancer"), str(EXAMPLES / "penguins")]) == 0


def test_validate_reports_file_path_and_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
apiVersion: conveyor.dev/v1alpha1
kind: Pipeline
metadata: {name: p}
spec:
  stages:
    - {name: a, uses: ingest, with: {source: "sklearn://iris"}}
    - {name: b, uses: train, dependsOn: [a, c], with: {estimator: sklearn.linear_model.Ridge}}
""")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: spec.stages[1].dependsOn[1]: unknown stage 'c' (fix: name one of: a, b)" in err
    assert "1 problem(s)" in err


def test_run_params_checked_against_the_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(
        (EXAMPLES / "breast-cancer" / "run.yaml").read_text().replace("min-accuracy:", "min-acuracy:")
    )
    (tmp_path / "pipeline.yaml").write_text((EXAMPLES / "breast-cancer" / "pipeline.yaml").read_text())
    assert main(["validate", str(tmp_path)]) == 1
    assert "spec.params.min-acuracy: the pipeline has no parameter 'min-acuracy'" in capsys.readouterr().err


def test_errors_have_no_traceback_unless_debug(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", str(missing)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {missing}: no such file"
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", "--debug", str(missing)],
        capture_output=True,
        text=True,
    )
    assert "Traceback" in proc.stderr


def test_bad_param_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "breast-cancer" / "pipeline.yaml")
    assert main(["run", path, "--param", "novalue"]) == 1
    assert "write it as NAME=VALUE" in capsys.readouterr().err


def test_unknown_param_is_rejected_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "breast-cancer" / "pipeline.yaml")
    assert main(["run", path, "-p", "min-acc=1"]) == 1
    assert "no parameter 'min-acc'" in capsys.readouterr().err


def test_stage_without_invocation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stage"]) == 2
    assert "CONVEYOR_INVOCATION is not set" in capsys.readouterr().err


def test_crds_writes_three_files(tmp_path: Path) -> None:
    assert main(["crds", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "conveyor.dev_modeldeployments.yaml",
        "conveyor.dev_pipelineruns.yaml",
        "conveyor.dev_pipelines.yaml",
    ]


def test_show_unknown_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "nope", "--store", str(tmp_path)]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def test_a_closed_pipe_is_not_an_error() -> None:
    """`conveyor validate examples/ | head -0`: the reader is gone before the line is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "validate", str(EXAMPLES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 141, err
    assert err == ""  # no "BrokenPipeError", no "Exception ignored"


def test_serve_listens_on_this_machine_only_unless_told() -> None:
    args = build_parser().parse_args(["serve", "--model", "m"])
    assert args.host == "127.0.0.1"


def test_the_operator_without_credentials_exits_naming_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(tmp_path / "missing"), HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "operator", "-A"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,  # it used to log a traceback and retry every 60 s, forever
    )
    assert proc.returncode == 1
    assert "no Kubernetes credentials" in proc.stderr and "set KUBECONFIG" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_runs_shows_whole_run_names_on_a_narrow_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from conveyor.artifacts import layout
    from conveyor.artifacts.store import LocalStore

    name = "breast-cancer-with-a-long-name-20261130-140434-0123abcd"
    record = {
        "run": name,
        "pipeline": "breast-cancer-with-a-long-name",
        "namespace": "default",
        "phase": "Succeeded",
        "startTime": datetime.now(UTC),
        "specDigest": "0" * 64,
        "params": {},
        "version": "test",
    }
    layout.write_run_record(LocalStore(tmp_path), layout.RunRecord.model_validate(record))
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal, 80 columns
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["runs", "--store", str(tmp_path)]) == 0
    assert name in capsys.readouterr().out  # cut to "breast-cancer-with-a-…" before
