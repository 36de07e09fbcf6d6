"""The main job, end to end: `conveyor run` on real data, real processes, real stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.artifacts import layout
from conveyor.artifacts.store import LocalStore, S3Store
from tests.conftest import EXAMPLES

BREAST = EXAMPLES / "breast-cancer" / "pipeline.yaml"


def conveyor(*args: str, env: dict[str, str] | None = None, check: bool = True) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_json(*args: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    proc = conveyor("run", *args, "--json", check=False, **kw)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON: {proc.stdout}\n{proc.stderr}") from None


def stages(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in record["stages"]}


def write_pipeline(
    tmp_path: Path,
    stages_: list[dict[str, Any]],
    name: str = "p",
    params: list[dict[str, Any]] | None = None,
) -> Path:
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"params": params or [], "stages": stages_},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def py_stage(name: str, code: str, **extra: Any) -> dict[str, Any]:
    """A custom stage whose command is a Python snippet (the image is not used locally)."""
    return {
        "name": name,
        "image": "python:3.11-slim",
        "command": [sys.executable, "-c", textwrap.dedent(code)],
        **extra,
    }


@pytest.mark.slow
def test_breast_cancer_runs_then_reruns_from_cache(tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, first = run_json(str(BREAST), "--store", str(store))
    assert code == 0, first["message"]
    assert first["phase"] == "Succeeded"
    model = first["model"]
    assert model["metrics"]["accuracy"] >= 0.95
    assert model["promoted"] is True and "passes the gate" in model["decision"]
    assert not any(s["cacheHit"] for s in first["stages"])
    # lineage: run.json, outputs with digests, the champion
    local = LocalStore(store)
    rec = layout.read_run_record(local, "default", "breast-cancer", first["run"])
    assert rec is not None and rec.spec_digest and "scikit-learn=" in rec.version
    assert local.verify(rec.artifacts["train"]["model"])
    champion = layout.read_champion(local, "default", "breast-cancer")
    assert champion is not None and champion.model.sha256 == model["sha256"]

    code, second = run_json(str(BREAST), "--store", str(store))
    assert code == 0
    assert all(s["cacheHit"] for s in second["stages"]), stages(second)
    assert second["model"]["sha256"] == model["sha256"]


@pytest.mark.slow
def test_changing_one_option_reruns_that_stage_and_its_descendants(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert run_json(str(BREAST), "--store", str(store))[0] == 0
    doc = yaml.safe_load(BREAST.read_text())
    # without the best C (1.0): another model (a search that picks the same one trains the same bytes)
    doc["spec"]["stages"][3]["with"]["search"]["space"]["C"] = [0.1, 10.0]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    code, rec = run_json(str(changed), "--store", str(store))
    assert code == 0
    hits = {name: s["cacheHit"] for name, s in stages(rec).items()}
    assert hits == {
        "ingest": True,
        "validate": True,
        "transform": True,
        "train": False,
        "evaluate": False,
    }


@pytest.mark.slow
def test_bad_data_fails_the_run_at_validate_and_nothing_downstream_runs(tmp_path: Path) -> None:
    doc = yaml.safe_load(BREAST.read_text())
    doc["spec"]["stages"][1]["with"]["expectations"]["columns"]["mean radius"]["max"] = 20
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, rec = run_json(str(path), "--store", str(tmp_path / "store"))
    assert code == 1
    st = stages(rec)
    assert st["validate"]["phase"] == "Failed"
    assert "values above max 20" in st["validate"]["message"]
    assert "column 'mean radius'" in st["validate"]["message"]
    assert [st[n]["phase"] for n in ("transform", "train", "evaluate")] == ["Skipped"] * 3
    assert rec["phase"] == "Failed" and rec["message"].startswith("stage 'validate' failed")
    assert rec["model"] is None
    assert not (tmp_path / "store" / "default" / "breast-cancer" / "champion.json").exists()


@pytest.mark.slow
def test_inferred_expectations_catch_a_changed_dataset(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    penguins = (EXAMPLES / "penguins" / "penguins.csv").read_text()
    csv.write_text(penguins)
    doc = yaml.safe_load((EXAMPLES / "penguins" / "pipeline.yaml").read_text())
    doc["spec"]["stages"][0]["with"]["source"] = str(csv)
    path = tmp_path / "penguins.yaml"
    path.write_text(yaml.safe_dump(doc))
    store = tmp_path / "store"
    code, rec = run_json(str(path), "--store", str(store))
    assert code == 0, rec["message"]
    assert rec["model"]["metrics"]["r2"] >= 0.7  # categorical columns and missing values
    assert (store / "default" / "penguins" / "expectations" / "validate.json").is_file()
    # a new island appears: the expectations inferred on the first run reject it
    csv.write_text(penguins.replace("Torgersen", "Atlantis"))
    code, rec = run_json(str(path), "--store", str(store))
    assert code == 1
    assert "island" in stages(rec)["validate"]["message"]
    assert "Atlantis" in stages(rec)["validate"]["message"]


@pytest.mark.slow
def test_s3_store_end_to_end(bucket: str, s3_env: str) -> None:
    code, rec = run_json(str(BREAST), "--store", f"s3://{bucket}/runs")
    assert code == 0, rec["message"]
    assert rec["model"]["uri"].startswith(f"s3://{bucket}/runs/default/breast-cancer/")
    s3 = S3Store(bucket, "runs")
    keys = s3.list(f"default/breast-cancer/{rec['run']}/")
    for stage in ("ingest", "validate", "transform", "train", "evaluate"):
        assert f"default/breast-cancer/{rec['run']}/{stage}/outputs.json" in keys
    assert f"default/breast-cancer/{rec['run']}/run.json" in keys
    assert layout.read_champion(s3, "default", "breast-cancer") is not None
    code, again = run_json(str(BREAST), "--store", f"s3://{bucket}/runs")
    assert code == 0 and all(s["cacheHit"] for s in again["stages"])


def test_sigkilled_stage_leaves_no_visible_outputs(tmp_path: Path) -> None:
    """Kill the ingest stage at the worst moment: its data is written, outputs.json not yet."""
    from conveyor.engine.invocation import StageInvocation

    store = LocalStore(tmp_path / "store")
    prefix = layout.stage_prefix("default", "p", "r1", "ingest")
    inv = StageInvocation(
        namespace="default",
        pipeline="p",
        run="r1",
        stage="ingest",
        uses="ingest",
        options={"source": "sklearn://iris"},
        store=store.root,
        output_prefix=store.uri(prefix),
    )
    killer = textwrap.dedent("""
        import os, signal
        from conveyor.artifacts import layout
        real = layout._write_json
        def write(store, key, value):
            if key.endswith("outputs.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(store, key, value)
        layout._write_json = write
        from conveyor.stages.runner import main
        raise SystemExit(main())
    """)
    proc = subprocess.run(
        [sys.executable, "-c", killer],
        capture_output=True,
        timeout=120,
        env={**os.environ, "CONVEYOR_INVOCATION": inv.to_json()},
    )
    assert proc.returncode == -signal.SIGKILL
    assert store.exists(f"{prefix}/data.parquet")  # half-done work is on disk...
    assert layout.read_result(store, prefix) is None  # ...but not visible as outputs
    assert not store.list("cache/")
    # the same stage run normally commits
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "stage"],
        capture_output=True,
        env={**os.environ, "CONVEYOR_INVOCATION": inv.to_json()},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = layout.read_result(store, prefix)
    assert result is not None and result.metrics["rows"] == 150


def test_failing_stage_message_and_retries(tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    flaky = py_stage(
        "flaky",
        f"""
        import pathlib, sys
        p = pathlib.Path({str(counter)!r})
        n = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(n))
        if n < 2:
            open(__import__("os").environ["CONVEYOR_TERMINATION_LOG"], "w").write("transient")
            sys.exit(3)
    """,
        retries=1,
    )
    broken = py_stage(
        "broken",
        """
        import sys
        print("about to fail", flush=True)
        sys.exit("the model server at http://x is unreachable")
    """,
        dependsOn=["flaky"],
    )
    after = py_stage("after", "print('never')", dependsOn=["broken"])
    path = write_pipeline(tmp_path, [flaky, broken, after])
    code, rec = run_json(str(path), "--store", str(tmp_path / "s"))
    assert code == 1
    st = stages(rec)
    assert st["flaky"]["phase"] == "Succeeded" and st["flaky"]["attempts"] == 2
    assert st["broken"]["phase"] == "Failed" and st["broken"]["attempts"] == 1
    assert "the model server at http://x is unreachable" in st["broken"]["message"]
    assert st["after"]["phase"] == "Skipped"
    assert "stage 'broken' failed" in rec["message"]


def test_stage_timeout(tmp_path: Path) -> None:
    slow = py_stage("slow", "import time; time.sleep(60)", timeoutSeconds=1)
    path = write_pipeline(tmp_path, [slow])
    started = time.monotonic()
    code, rec = run_json(str(path), "--store", str(tmp_path / "s"))
    assert code == 1 and time.monotonic() - started < 30
    assert stages(rec)["slow"]["message"] == "timed out after 1s"


def test_ctrl_c_cancels_cleanly(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    slow = py_stage(
        "slow",
        f"""
        import os, pathlib, time
        pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))
        time.sleep(60)
    """,
    )
    path = write_pipeline(tmp_path, [slow, py_stage("next", "pass", dependsOn=["slow"])])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "run",
            str(path),
            "--json",
            "--store",
            str(tmp_path / "s"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    rec = json.loads(out)
    assert rec["phase"] == "Cancelled"
    assert [s["phase"] for s in rec["stages"]] == ["Cancelled", "Cancelled"]
    child = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


@pytest.mark.slow
def test_exec_launch_mode_runs_the_pod_command(tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        [
            {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
            {"name": "prep", "uses": "transform", "dependsOn": ["ingest"]},
            {
                "name": "train",
                "uses": "train",
                "dependsOn": ["prep"],
                "with": {"estimator": "sklearn.tree.DecisionTreeClassifier"},
            },
        ],
    )
    code, rec = run_json(str(path), "--store", str(tmp_path / "s"), "--launch", "exec")
    assert code == 0, rec["message"]
    assert rec["model"]["decision"] == "not evaluated"


def test_resume_from_reuses_successful_stages(tmp_path: Path) -> None:
    ok = py_stage("first", "print('first')")
    gate = py_stage(
        "second",
        "import os, sys; sys.exit(os.environ['MODE'] != 'pass')",
        dependsOn=["first"],
        env=[{"name": "MODE", "value": "$(params.mode)"}],
    )
    params = [{"name": "mode", "default": "fail"}]
    path = write_pipeline(tmp_path, [ok, gate], params=params)
    code, failed = run_json(str(path), "--store", str(tmp_path / "s"), "--no-cache")
    assert code == 1
    assert stages(failed)["second"]["phase"] == "Failed"
    code, resumed = run_json(
        str(path),
        "--store",
        str(tmp_path / "s"),
        "--no-cache",
        "--resume-from",
        failed["run"],
        "-p",
        "mode=pass",
    )
    assert code == 0, resumed["message"]
    st = stages(resumed)
    assert st["first"]["message"] == f"reused from run {failed['run']}"
    assert st["second"]["phase"] == "Succeeded" and st["second"]["attempts"] == 1
    assert resumed["resumedFrom"] == failed["run"]


def test_resume_from_an_unknown_run_is_refused_before_anything_runs(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, [py_stage("first", "print('first')")])
    store = tmp_path / "s"
    proc = conveyor("run", str(path), "--store", str(store), "--resume-from", "no-such-run", check=False)
    assert proc.returncode != 0
    assert "--resume-from no-such-run: pipeline" in proc.stderr and "has no such run" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(store.rglob("run.json"))  # nothing ran, nothing was recorded


@pytest.mark.slow
def test_runs_and_show_list_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, rec = run_json(str(BREAST), "--store", str(store))
    assert code == 0
    listing = conveyor("runs", "--store", str(store)).stdout
    assert rec["run"] in listing and "Succeeded" in listing
    shown = json.loads(conveyor("show", rec["run"], "--store", str(store), "--json").stdout)
    assert shown["run"] == rec["run"] and shown["model"]["sha256"] == rec["model"]["sha256"]


def test_a_model_rejected_by_its_gate_exits_3_unless_allowed(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    proc = conveyor("run", str(BREAST), "--store", store, "-p", "min-accuracy=1.01", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "the model did not pass: accuracy" in proc.stderr and "< min 1.01" in proc.stderr
    code, record = run_json(str(BREAST), "--store", store, "-p", "min-accuracy=1.01", "--allow-rejected")
    assert code == 0 and record["phase"] == "Succeeded" and record["model"]["passed"] is False
    code, record = run_json(str(BREAST), "--store", store)
    assert code == 0 and record["model"]["passed"] is True
