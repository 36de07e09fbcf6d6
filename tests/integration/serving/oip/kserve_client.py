"""Drives the `kserve` Python client (V2 REST) against a running model server and prints what it
saw as JSON. Run by `test_conformance.py` with the interpreter of `.venv-oip` (`make oip-venv`),
because `kserve` pins `pandas<3` and `protobuf<7`, which the project's own environment does not
have. Input on stdin: {"url": ..., "model": ..., "columns": {feature: [values, ...]}}."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse

DTYPES = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}


def build_request(
    model: str, meta: ModelMetadataResponse, columns: dict[str, list[Any]], binary: bool
) -> InferRequest:
    """One input per input the metadata lists, each filled from the column of that name."""
    inputs = []
    for tensor in meta.inputs:
        values = np.asarray(columns[tensor.name], dtype=DTYPES[tensor.datatype])
        infer_input = InferInput(name=tensor.name, shape=list(values.shape), datatype=tensor.datatype)
        infer_input.set_data_from_numpy(values, binary_data=binary)
        inputs.append(infer_input)
    return InferRequest(model_name=model, infer_inputs=inputs, request_id=f"kserve-{binary}")


async def infer(client: InferenceRESTClient, url: str, model: str, request: InferRequest) -> dict[str, Any]:
    """Predictions and the response id, or the status, content type and body of the refusal."""
    try:
        response = await client.infer(url, request, model_name=model)
    except httpx.HTTPStatusError as err:
        return {
            "status": err.response.status_code,
            "content_type": err.response.headers.get("content-type", ""),
            "body": err.response.text,
        }
    output = response.outputs[0]
    return {"status": 200, "id": response.id, "output": output.name, "predictions": list(output.data)}


async def main(job: dict[str, Any]) -> dict[str, Any]:
    url, model = job["url"], job["model"]
    seen: dict[str, Any] = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30)) as client:
        seen["server_live"] = await client.is_server_live(url)
        seen["server_ready"] = await client.is_server_ready(url)
        seen["model_ready"] = await client.is_model_ready(url, model)
        seen["unknown_model_ready"] = await client.is_model_ready(url, model + "-unknown")
        # The client has no metadata call: read it over HTTP and parse it with kserve's own V2 model.
        async with httpx.AsyncClient(timeout=30) as http:
            raw = (await http.get(f"{url}/v2/models/{model}")).raise_for_status().json()
        meta = ModelMetadataResponse.model_validate(raw)
        seen["metadata"] = meta.model_dump()
        for mode, binary in (("json", False), ("binary", True)):
            request = build_request(model, meta, job["columns"], binary)
            seen[mode] = await infer(client, url, model, request)
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
