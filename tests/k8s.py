"""Checks of Kubernetes objects with real parts: the official OpenAPI schemas
(kubernetes-validate, strict), the CRDs' own schemas (jsonschema) and their CEL rules
(cel-python), evaluated as the API server would on create and update."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import yaml

CRDS = Path(__file__).resolve().parent.parent / "crds"
K8S_VERSION = kubernetes_validate.latest_version()


def validate_k8s(obj: dict[str, Any]) -> None:
    """Strict validation against the newest official schemas this package ships."""
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@cache
def crd_for(kind: str) -> dict[str, Any]:
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            return dict(crd)
    raise KeyError(kind)


def _to_jsonschema(schema: dict[str, Any], top: bool = False) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes") and k != "nullable"}
    if schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in schema:
        return {}
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in schema:
        out["properties"] = {k: _to_jsonschema(v) for k, v in schema["properties"].items()}
        if not top and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False  # strict field validation, as `kubectl apply`
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _to_jsonschema(schema["additionalProperties"])
    if "items" in schema:
        out["items"] = _to_jsonschema(schema["items"])
    return out


def validate_custom(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Problems of a custom resource: its CRD's schema, then its CEL rules."""
    version = crd_for(obj["kind"])["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(_to_jsonschema(schema, top=True))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    return errors or cel_errors(schema, obj, old)


def cel_errors(schema: dict[str, Any], value: Any, old: Any = None, path: str = "") -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue
        env = celpy.Environment()
        program = env.program(env.compile(rule["rule"]))
        activation = {"self": celpy.json_to_cel(copy.deepcopy(value))}
        if uses_old:
            activation["oldSelf"] = celpy.json_to_cel(copy.deepcopy(old))
        if not bool(program.evaluate(activation)):
            errors.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                prev = old.get(key) if isinstance(old, dict) else None
                errors += cel_errors(sub, value[key], prev, f"{path}.{key}".lstrip("."))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += cel_errors(schema["items"], item, None, f"{path}[{i}]")
    return errors
