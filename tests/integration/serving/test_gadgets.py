"""Gadget model files, their digests rewritten in the store's records, refused by `serve` when it
loads the skops file (`--backend skops`, or no usable model.onnx); served from model.onnx
otherwise, without the skops file ever being read."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from conveyor.serving.model import ModelError, ServedModel, resolve_uri
from tests.integration.serving.conftest import model_path
from tests.unit.artifacts.test_models import GADGETS, write_gadget


@contextmanager
def poisoned(trained: dict[str, str], gadget: str) -> Iterator[str]:
    """Replace the run's model by `gadget` (and, unless the gadget is a digest mismatch, rewrite
    its digest in run.json and outputs.json as any writer of the store could); restore after.
    Yields what the refusal must name."""
    path = model_path(trained)
    records = [path.parent.parent / "run.json", path.parent / "outputs.json"]
    saved = {p: p.read_bytes() for p in [path, *records]}
    recorded = hashlib.sha256(saved[path]).hexdigest()
    try:
        if gadget == "digest-mismatch":
            path.write_bytes(saved[path] + b"\0")
            yield recorded
            return
        smuggled = write_gadget(gadget, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        for record in records:
            record.write_bytes(saved[record].replace(recorded.encode(), digest.encode()))
        yield smuggled
    finally:
        for p, data in saved.items():
            p.write_bytes(data)


CASES = [*sorted(GADGETS), "digest-mismatch"]


@pytest.mark.parametrize("gadget", CASES)
def test_served_model_load_refuses(trained: dict[str, str], gadget: str) -> None:
    with poisoned(trained, gadget) as expected, pytest.raises(ModelError) as err:
        ServedModel.load(resolve_uri(trained["model"]), "skops")
    assert trained["model"] in str(err.value) and expected in str(err.value)


@pytest.mark.parametrize("gadget", sorted(GADGETS))
def test_onnx_backend_never_reads_the_gadget(trained: dict[str, str], gadget: str) -> None:
    with poisoned(trained, gadget):
        model_path(trained).unlink()  # a load that read the skops file would fail without it
        served = ServedModel.load(resolve_uri(trained["model"]))
    assert served.backend == "onnx" and served.estimator is None


@pytest.mark.parametrize("gadget", CASES)
def test_conveyor_serve_exits_naming_the_refusal(trained: dict[str, str], gadget: str) -> None:
    with poisoned(trained, gadget) as expected:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "conveyor",
                "serve",
                "--model",
                trained["model"],
                "--backend",
                "skops",
                "--port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode != 0
    assert expected in proc.stderr and "model.skops" in proc.stderr and "Traceback" not in proc.stderr
