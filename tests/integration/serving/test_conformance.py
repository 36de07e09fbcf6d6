"""Third-party conformance of `conveyor serve` to the Open Inference Protocol (V2) REST API, on a
real server process with the pipeline's model: schemathesis against the official OpenAPI file
(vendored, unmodified, in `oip/`), then the tritonclient and kserve clients reading readiness
and metadata and inferring. Whatever the server answers must be documented by the file (status
code, content type, body schema) and no request may make it fail (5xx)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.integration.serving.conftest import SERVER_ID, start_serve

OIP = Path(__file__).parent / "oip"
SPEC = OIP / "open_inference_rest.yaml"
SPEC_SHA256 = "719644d1cec52d1c98268ee16f3b75d6de7f523c6686463cbf06bf79134edbb2"  # see oip/README.md
OIP_PYTHON = Path(__file__).parents[3] / ".venv-oip" / "bin" / "python"
INFER = "POST /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"
FUZZ_EXAMPLES = 100  # generated cases per operation and generation mode (bounds the file's run time)
# What the file documents, for every case: no 5xx, a documented status code and content type,
# documented headers, and a body that matches the documented schema.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# For generated cases (which carry their generation metadata): invalid data is refused (4xx),
# and a method the file does not list is a 405 with an `Allow` header.
GENERATED_CHECKS = [*CHECKS, negative_data_rejection, unsupported_method, allow_header_conformance]
TALLY: collections.Counter[tuple[str, int]] = collections.Counter()  # (phase, status) -> cases


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    name: str
    version: str

    @property
    def path_parameters(self) -> dict[str, str]:
        return {"MODEL_NAME": self.name, "MODEL_VERSION": self.version}


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def predict(served: Served, rows: Any) -> list[Any]:
    """What the plain `/predict` endpoint answers for these rows: the reference predictions."""
    return list(_post(served.url + "/predict", {"instances": rows.to_dict("records")})["predictions"])


@pytest.fixture(scope="module")
def served(trained: dict[str, str], features: Any) -> Iterator[Served]:
    """`conveyor serve` on the trained model. Its name and version (the V2 path parameters) are
    read from the server itself; at the end its log must hold no traceback."""
    proc = start_serve("--model", trained["model"])
    port: int = proc.port  # type: ignore[attr-defined]
    try:
        url = f"http://127.0.0.1:{port}"
        reply = _post(url + "/predict", {"instances": features.head(1).to_dict("records")})
        yield Served(url, port, reply["model"], reply["version"])
    finally:
        proc.terminate()
        _, log = proc.communicate(timeout=30)
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def schema() -> Any:
    return schemathesis.openapi.from_dict(load_spec())


def load_spec() -> dict[str, Any]:
    """The vendored file, checked unmodified. Its paths spell parameters `${MODEL_NAME}` (the
    prose's notation): in OpenAPI that is a literal `$` before `{MODEL_NAME}`, so a client would
    request `/v2/models/$name/...`. That spec bug is corrected here, in memory only."""
    raw = SPEC.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SPEC_SHA256, f"{SPEC} differs from the upstream file"
    spec: dict[str, Any] = yaml.safe_load(raw)
    spec["paths"] = {re.sub(r"\$(\{\w+\})", r"\1", path): item for path, item in spec["paths"].items()}
    return spec


def operations(schema: Any) -> dict[str, Any]:
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


def call(case: Any, served: Served, phase: str, checks: list[Any]) -> Any:
    """Send one case, count it, and run the checks on the answer (raising what they found)."""
    response = case.call(base_url=served.url, timeout=30)
    TALLY[(phase, response.status_code)] += 1
    case.validate_response(response, checks=checks)
    return response


def fuzz(strategy: Any, examples: int, test: Callable[[Any], object]) -> None:
    """Run `test` on up to `examples` cases drawn from a schemathesis strategy (Hypothesis shrinks
    a failing case before reporting it)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        test(case)

    run()


def phase_total(phase: str) -> int:
    return sum(n for (p, _), n in TALLY.items() if p == phase)


# schemathesis ----------------------------------------------------------------------------------
def test_the_spec_has_the_routes_under_test(schema: Any) -> None:
    assert set(operations(schema)) == {
        "GET /v2/",
        "GET /v2/health/live",
        "GET /v2/health/ready",
        "GET /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}",
        "GET /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/ready",
        INFER,
    }


def test_coverage_phase(schema: Any, served: Served) -> None:
    """schemathesis' deterministic coverage cases, positive and negative: boundary and wrongly
    typed bodies, malformed headers, and every method the file does not list (405 + Allow)."""
    for op in operations(schema).values():
        config = schema.config.generation_for(operation=op, phase="coverage")
        for case in schema.iter_coverage_cases(
            op, generation_modes=list(GenerationMode), generation_config=config
        ):
            if case.path_parameters:
                case.path_parameters.update(served.path_parameters)
            call(case, served, "coverage", GENERATED_CHECKS)
    assert phase_total("coverage") >= 100 and TALLY[("coverage", 405)] >= 6 * 6


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzing_phase(schema: Any, served: Served, mode: GenerationMode) -> None:
    """Generated requests for every operation, on the served model's routes: schema-valid ones
    (positive), then invalid bodies (negative, only the inference operation has one)."""
    phase = f"fuzzing-{mode.value}"
    for op in operations(schema).values():
        if mode is GenerationMode.NEGATIVE and op.label != INFER:
            continue
        strategy = op.as_strategy(generation_mode=mode, path_parameters=served.path_parameters)
        fuzz(strategy, FUZZ_EXAMPLES, lambda case: call(case, served, phase, GENERATED_CHECKS))
    assert phase_total(phase) >= FUZZ_EXAMPLES // 2


def test_any_model_name_or_version(schema: Any, served: Served) -> None:
    """Generated names and versions in the model routes: never a 5xx, and a JSON error for
    whatever is not this model. (The file documents no status for an unknown model, so 404 is
    not checked against it.)"""

    def test(case: Any) -> None:
        response = call(case, served, "any-name", [not_a_server_error])
        if response.status_code != 200:
            assert response.status_code in (400, 404, 405), response.text
            assert response.headers["content-type"][0].startswith("application/json"), response.headers
            assert isinstance(response.json()["error"], str)

    for label, op in operations(schema).items():
        if "MODEL_NAME" in label:
            fuzz(op.as_strategy(), FUZZ_EXAMPLES // 2, test)
    assert phase_total("any-name") >= FUZZ_EXAMPLES // 2


def test_spec_examples_are_refused_as_documented(schema: Any, served: Served) -> None:
    """The file's own example requests (`x-examples`) name inputs this model does not have: a
    documented 400 with an `inference_error_response`."""
    examples = load_spec()["components"]["schemas"]["inference_request"]["x-examples"]
    op = operations(schema)[INFER]
    for body in examples.values():
        case = op.Case(path_parameters=served.path_parameters, body=body, media_type="application/json")
        response = call(case, served, "examples", CHECKS)
        assert response.status_code == 400 and response.json()["error"], response.text


def test_valid_requests_conform(schema: Any, served: Served, features: Any) -> None:
    """Requests the model can answer, in each tensor layout the server accepts: a 200 whose
    `inference_response` matches the file, with the predictions `/predict` gives."""
    rows = features.head(7)
    expected = predict(served, rows)
    columns = {
        "id": "columns",
        "inputs": [
            {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": rows[c].tolist()} for c in rows
        ],
        "outputs": [{"name": "predict"}],
    }
    nested = {
        "inputs": [
            {"name": c, "shape": [len(rows), 1], "datatype": "FP64", "data": [[v] for v in rows[c]]}
            for c in rows
        ],
        "parameters": {"note": "columns as [n, 1] tensors"},
    }
    tensor = {
        "inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.values.tolist()}]
    }
    op = operations(schema)[INFER]
    for body in (columns, nested, tensor):
        case = op.Case(path_parameters=served.path_parameters, body=body, media_type="application/json")
        reply = call(case, served, "valid", CHECKS).json()
        assert reply["model_name"] == served.name and reply["model_version"] == served.version
        assert reply["outputs"][0]["data"] == expected
        # the request's id when it sent one, else one the server made (feedback refers to it)
        assert reply["id"] == body["id"] if "id" in body else SERVER_ID.fullmatch(reply["id"])


@pytest.fixture(scope="module", autouse=True)
def schemathesis_summary() -> Iterator[None]:
    """At the end of the module, prints what the schemathesis phases sent and got (see it with -s)."""
    yield
    by_phase: dict[str, dict[int, int]] = collections.defaultdict(dict)
    for (phase, status), n in sorted(TALLY.items()):
        by_phase[phase][status] = n
    print(f"\nschemathesis {schemathesis.__version__}: {sum(TALLY.values())} cases")
    for phase, statuses in by_phase.items():
        print(f"  {phase}: {sum(statuses.values())} cases, by status {statuses}")


# tritonclient ----------------------------------------------------------------------------------
def test_tritonclient(served: Served, features: Any) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException, triton_to_np_dtype

    client = triton.InferenceServerClient(url=f"127.0.0.1:{served.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(served.name) and client.is_model_ready(served.name, served.version)
        assert not client.is_model_ready(served.name + "-unknown")
        assert not client.is_model_ready(served.name, served.version + "-unknown")
        assert client.get_server_metadata()["name"] == "conveyor"
        meta = client.get_model_metadata(served.name)
        assert meta == client.get_model_metadata(served.name, served.version)
        assert meta["name"] == served.name and meta["versions"] == [served.version]
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata(served.name + "-unknown")
        assert unknown.value.status() == "404" and served.name in unknown.value.message()

        rows = features.head(9)
        expected = predict(served, rows)
        output = meta["outputs"][0]

        def inputs(binary: bool) -> list[Any]:
            made = []
            for tensor in meta["inputs"]:  # built from what the metadata says the inputs are
                values = rows[tensor["name"]].to_numpy().astype(triton_to_np_dtype(tensor["datatype"]))
                made.append(triton.InferInput(tensor["name"], list(values.shape), tensor["datatype"]))
                made[-1].set_data_from_numpy(values, binary_data=binary)
            return made

        requested = [triton.InferRequestedOutput(output["name"], binary_data=False)]
        result = client.infer(served.name, inputs(False), outputs=requested, request_id="triton-json")
        assert result.as_numpy(output["name"]).tolist() == expected
        assert result.get_response()["id"] == "triton-json"
        assert result.as_numpy(output["name"]).dtype == triton_to_np_dtype(output["datatype"])
        # No requested outputs: tritonclient asks for binary outputs; a JSON answer is still valid.
        result = client.infer(served.name, inputs(False), model_version=served.version)
        assert result.as_numpy(output["name"]).tolist() == expected
        # tritonclient's default: binary tensor data. Supported, or a clear JSON 400.
        try:
            result = client.infer(served.name, inputs(True))
        except InferenceServerException as err:
            assert err.status() == "400", err
            assert "binary" in err.message() and "decoding the response" not in err.message(), err
        else:
            assert result.as_numpy(output["name"]).tolist() == expected
    finally:
        client.close()


# kserve ----------------------------------------------------------------------------------------
def test_kserve_client(served: Served, features: Any) -> None:
    if not OIP_PYTHON.exists():
        missing = f"no {OIP_PYTHON}: `make oip-venv` installs the kserve client there"
        if os.environ.get("CI"):  # `make test` installs it: in CI its absence is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    rows = features.head(6)
    job = {"url": served.url, "model": served.name, "columns": {c: rows[c].tolist() for c in rows}}
    proc = subprocess.run(
        [str(OIP_PYTHON), str(OIP / "kserve_client.py")],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["server_live"] is True and seen["server_ready"] is True
    assert seen["model_ready"] is True and seen["unknown_model_ready"] is False
    assert seen["metadata"]["name"] == served.name and seen["metadata"]["versions"] == [served.version]
    assert [t["name"] for t in seen["metadata"]["inputs"]] == list(rows.columns)
    expected = predict(served, rows)
    assert seen["json"] == {"status": 200, "id": "kserve-False", "output": "predict", "predictions": expected}
    binary = seen["binary"]  # the binary tensor extension: supported, or a clear JSON 400
    if binary["status"] == 200:
        assert binary["predictions"] == expected
    else:
        assert binary["status"] == 400 and binary["content_type"].startswith("application/json"), binary
        assert "binary" in json.loads(binary["body"])["error"], binary
