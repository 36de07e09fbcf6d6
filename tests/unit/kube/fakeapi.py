"""An in-memory API server behind the real `KubeClient`: it makes the checks a real one makes
where the operator went wrong against one (label selectors and names are validated, a POST of
an existing name is 409, JSON with NaN is a 400, a spec change bumps metadata.generation), and
nothing else: no controllers, no garbage collector. Tests play those parts by hand."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from conveyor.kube.client import Connection, KubeClient

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Children are named as DNS-1123 labels (a Job's name becomes its pods' job-name label);
# a Service's name must also start with a letter.
NAME_RULES = {
    "services": (DNS1035_LABEL, 63),
    "jobs": (DNS1123_LABEL, 63),
    "deployments": (DNS1123_LABEL, 63),
}


class Invalid(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def valid_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.match(value))


def _reject_constant(name: str) -> Any:
    raise Invalid(400, f"invalid JSON: {name}")


@dataclass
class FakeApi:
    objects: dict[tuple[str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (verb, plural)
    counter: int = 0

    # what tests do by hand -------------------------------------------------------------
    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        self.objects[(plural, meta.get("namespace"), meta["name"])] = obj
        return obj

    def of(self, plural: str) -> list[dict[str, Any]]:
        return [o for (p, _, _), o in self.objects.items() if p == plural]

    def one(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.objects[(plural, namespace, name)]

    def count(self, verb: str, plural: str) -> int:
        return sum(1 for c in self.calls if c == (verb, plural))

    # the server ------------------------------------------------------------------------
    def handle(
        self, method: str, url: str, data: str | None, params: dict[str, str] | None
    ) -> tuple[int, Any]:
        try:
            body = json.loads(data, parse_constant=_reject_constant) if data else None
            return self._route(method, urlsplit(url).path, body, params or {})
        except Invalid as err:
            return err.status, {"kind": "Status", "message": str(err), "code": err.status}

    def _route(self, method: str, path: str, body: Any, params: dict[str, str]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        parts = parts[2:] if parts[0] == "api" else parts[3:]
        namespace = None
        if parts[0] == "namespaces" and len(parts) > 2:
            namespace, parts = parts[1], parts[2:]
        plural, name, sub = (
            parts[0],
            parts[1] if len(parts) > 1 else None,
            parts[2] if len(parts) > 2 else None,
        )
        self.calls.append((method.lower(), plural + (f"/{sub}" if sub else "")))
        key = (plural, namespace, name or "")
        if method == "GET" and name is None:
            return 200, {"items": self._list(plural, namespace, params.get("labelSelector", ""))}
        if method == "GET":
            return (200, self.objects[key]) if key in self.objects else (404, {"message": "not found"})
        if method == "POST":
            return self._create(plural, namespace, body)
        if key not in self.objects:
            return 404, {"message": "not found"}
        if method == "DELETE":
            return 200, self.objects.pop(key)
        return 200, self._patch(key, body, sub)

    def _list(self, plural: str, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        for value in wanted.values():
            if not valid_label_value(value):
                raise Invalid(400, f"unable to parse requirement: invalid label value: {value!r}")
        return [
            o
            for (p, ns, _), o in self.objects.items()
            if p == plural
            and ns == namespace
            and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]

    def _create(self, plural: str, namespace: str | None, obj: dict[str, Any]) -> tuple[int, Any]:
        meta = obj["metadata"]
        rule, limit = NAME_RULES.get(plural, (DNS1123_SUBDOMAIN, 253))
        if len(meta["name"]) > limit or not rule.match(meta["name"]):
            raise Invalid(422, f"{plural} {meta['name']!r} is invalid: metadata.name")
        for value in (meta.get("labels") or {}).values():
            if not valid_label_value(value):
                raise Invalid(422, f"metadata.labels: invalid value {value!r}")
        if (plural, namespace, meta["name"]) in self.objects:
            return 409, {"message": f"{plural} {meta['name']!r} already exists", "reason": "AlreadyExists"}
        self.counter += 1
        meta["uid"] = f"uid-{plural}-{self.counter}"
        meta["generation"] = 1
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        self.objects[(plural, namespace, meta["name"])] = obj
        return 201, obj

    def _patch(self, key: tuple[str, str | None, str], patch: dict[str, Any], sub: str | None) -> Any:
        obj = self.objects[key]
        if sub == "status":
            patch = {"status": patch.get("status")}
        else:
            patch = {k: v for k, v in patch.items() if k != "status"}
        new = _apply(obj, patch)
        if new.get("spec") != obj.get("spec"):
            new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        self.objects[key] = new
        return new


def _apply(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _apply(out.get(k), v)
    return out


class _Response:
    def __init__(self, status: int, payload: Any) -> None:
        self.status = status
        self._text = json.dumps(payload)

    async def text(self) -> str:
        return self._text

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *_: Any) -> None:
        return None


class _Session:
    closed = False

    def __init__(self, api: FakeApi) -> None:
        self.api = api

    def request(
        self, method: str, url: str, data: str | None = None, params: Any = None, headers: Any = None
    ) -> _Response:
        return _Response(*self.api.handle(method, url, data, params))

    async def close(self) -> None:
        return None


class FakeClient(KubeClient):
    """The real client, its HTTP session swapped for the fake server."""

    def __init__(self, api: FakeApi) -> None:
        super().__init__(Connection(server="https://fake"))
        self.api = api

    async def _http(self) -> Any:
        return _Session(self.api)

    async def serves(self, res: Any) -> bool:
        return False
