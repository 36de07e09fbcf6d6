"""Generate the CustomResourceDefinitions from the pydantic models (pure; no I/O).

Pydantic emits JSON Schema 2020-12; a CRD wants a *structural* OpenAPI v3.0 schema: no
`$ref`, `nullable` instead of null types, boolean `exclusiveMinimum`, no `const`, no
`additionalProperties` beside `properties`, and free-form objects marked
`x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from conveyor.api.common import CATEGORY, GROUP, VERSION
from conveyor.api.modeldeployment import ModelDeployment
from conveyor.api.pipeline import Pipeline
from conveyor.api.pipelinerun import PipelineRun

Schema = dict[str, Any]

# Lists whose items are keyed by a field: merged per key by server-side apply.
LIST_MAP_KEYS = {"conditions": "type", "stages": "name", "params": "name", "env": "name"}
_DROP = {"title", "additionalProperties", "$defs"}


def _deref(schema: Schema, defs: Schema) -> Schema:
    if "$ref" in schema:
        target = defs[schema["$ref"].split("/")[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in schema.items() if k != "$ref"}}
        return _deref(merged, defs)
    return schema


def _structural(schema: Schema, defs: Schema, prop: str = "") -> Schema:
    schema = _deref(schema, defs)
    out: Schema = {}
    variants = schema.get("anyOf")
    if variants is not None:
        non_null = [_deref(v, defs) for v in variants if v.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(non_null) == 1:
            out = _structural({**non_null[0], **rest}, defs, prop)
            if len(non_null) < len(variants):
                out["nullable"] = True
            return out
        types = {v.get("type") for v in non_null}
        if types <= {"string", "integer"}:
            return {**_keep(rest), "x-kubernetes-int-or-string": True}
        return {**_keep(rest), "x-kubernetes-preserve-unknown-fields": True}
    out.update(_keep(schema))
    if "const" in schema:
        out["enum"] = [schema["const"]]
        out["type"] = "string"
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        out["minimum"] = schema["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        out["maximum"] = schema["exclusiveMaximum"]
        out["exclusiveMaximum"] = True
    if schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props:
            out["properties"] = {k: _structural(v, defs, k) for k, v in props.items()}
        elif isinstance(extra, dict) and extra:
            value = _structural(extra, defs)
            if value.get("x-kubernetes-preserve-unknown-fields") and "type" not in value:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = value
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if schema.get("type") == "array":
        out["items"] = _structural(schema.get("items", {}), defs)
        key = LIST_MAP_KEYS.get(prop)
        if key and key in out["items"].get("required", []):
            out["x-kubernetes-list-type"] = "map"
            out["x-kubernetes-list-map-keys"] = [key]
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _keep(schema: Schema) -> Schema:
    skip = _DROP | {"anyOf", "const", "properties", "items", "exclusiveMinimum", "exclusiveMaximum"}
    out = {k: v for k, v in schema.items() if k not in skip}
    if out.get("default", 0) is None:
        del out["default"]
    return out


def openapi_schema(model: type[BaseModel]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema = _structural(raw, defs)
    schema.pop("description", None)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"type": "string"}
    schema["properties"]["kind"] = {"type": "string"}
    schema["required"] = ["spec"]
    return schema


_COMMON_COLUMNS = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]

KINDS: dict[str, dict[str, Any]] = {
    "Pipeline": {
        "model": Pipeline,
        "plural": "pipelines",
        "short": ["cvp"],
        "columns": [
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            *_COMMON_COLUMNS,
        ],
    },
    "PipelineRun": {
        "model": PipelineRun,
        "plural": "pipelineruns",
        "short": ["cvr"],
        "columns": [
            {"name": "Pipeline", "type": "string", "jsonPath": ".spec.pipelineRef.name"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Stage", "type": "string", "jsonPath": ".status.currentStage"},
            {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
            {"name": "Approval", "type": "string", "jsonPath": ".status.model.approval"},
            {
                "name": "Reason",
                "type": "string",
                "priority": 1,
                "jsonPath": '.status.conditions[?(@.type=="Succeeded")].reason',
            },
            {"name": "Started", "type": "date", "priority": 1, "jsonPath": ".status.startTime"},
            *_COMMON_COLUMNS,
        ],
    },
    "ModelDeployment": {
        "model": ModelDeployment,
        "plural": "modeldeployments",
        "short": ["cvm"],
        "columns": [
            {"name": "Model", "type": "string", "jsonPath": ".status.modelVersion"},
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {"name": "Drift", "type": "number", "jsonPath": ".status.lastDriftScore"},
            *_COMMON_COLUMNS,
        ],
    },
}


def crd(kind: str) -> dict[str, Any]:
    info = KINDS[kind]
    plural = info["plural"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "conveyor"},
            # Helm never deletes a CRD with this annotation (and its custom resources with it).
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": info["short"],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info["columns"],
                    "schema": {"openAPIV3Schema": openapi_schema(info["model"])},
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, for every kind."""
    return {f"{GROUP}_{KINDS[k]['plural']}.yaml": crd(k) for k in KINDS}
