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


# The restricted Pod Security Standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
_ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What in a pod spec breaks the restricted profile (baseline checks included)."""
    bad = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            bad.append(f"{flag} is set")
    for vol in pod_spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            bad.append(f"volume {vol['name']} uses {kinds - _ALLOWED_VOLUMES}")
    pod_sc = pod_spec.get("securityContext", {})
    if pod_sc.get("sysctls"):
        bad.append("sysctls are set")
    containers = [
        *pod_spec.get("initContainers", []),
        *pod_spec.get("containers", []),
        *pod_spec.get("ephemeralContainers", []),
    ]
    if not containers:
        bad.append("no containers")
    for c in containers:
        sc = c.get("securityContext", {})
        name = c.get("name")
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            bad.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            bad.append(f"{name}: runs as UID 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile is {seccomp!r}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort {port['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount {sc['procMount']}")
    return bad


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    if kind == "Pod":
        return dict(obj["spec"])
    if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return dict(obj["spec"]["template"]["spec"])
    if kind == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return None
