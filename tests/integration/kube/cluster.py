"""A Kubernetes API that runs here: the kmock emulator, plus what the real API server adds.

kmock stores objects as given, over real HTTP. This subclass plays the rest of the API server
the operator relies on: it stamps uid, creationTimestamp, resourceVersion and generation, and
records every (verb, resource) it is sent, so the Helm chart's RBAC can be checked against
what the operator really does.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import kmock
import yaml
from kmock._internal import enums, parsing, rendering

from conveyor.api.crd import all_crds

# What the operator's code and Kopf need discovered: our CRDs and the built-in kinds.
BUILTIN = {
    "v1/namespaces": dict(kind="Namespace", namespaced=False),
    "v1/pods": dict(kind="Pod", namespaced=True),
    "v1/events": dict(kind="Event", namespaced=True),
    "v1/secrets": dict(kind="Secret", namespaced=True),
    "v1/services": dict(kind="Service", namespaced=True),
    "batch/v1/jobs": dict(kind="Job", namespaced=True, subresources={"status"}),
    "apps/v1/deployments": dict(kind="Deployment", namespaced=True, subresources={"status"}),
    "events.k8s.io/v1/events": dict(kind="Event", namespaced=True),
    "apiextensions.k8s.io/v1/customresourcedefinitions": dict(
        kind="CustomResourceDefinition", namespaced=False
    ),
}
# The operator's requests: its own client's and Kopf's (the tests' own use aiohttp's default).
OPERATOR_AGENTS = ("conveyor-operator/", "kopf/")
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def _parse_path(path: str) -> Any:
    """kmock 0.8 reads `/api/v1/namespaces[/NAME]` as a namespace with no resource; the real
    API server reads it as the cluster-scoped `namespaces` resource (Kopf lists it)."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None)
    return _original_parse_path(path)


_original_parse_path = parsing.parse_path
parsing.parse_path = _parse_path


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """The emulator with the API server's bookkeeping and a log of (verb, resource)."""

    calls: Counter[tuple[str, str]] = attrs.field(factory=Counter, init=False)
    creates: Counter[tuple[str, str, str]] = attrs.field(factory=Counter, init=False)
    _rv: Any = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: rendering.Request) -> Any:
        # kmock keeps every request for assertions and walks that history on each new one;
        # this harness asserts on `calls`/`creates` instead, so keep the history short.
        if len(self._requests) > 16:
            del self._requests[:-4]
        if request.resource is not None:
            self._record(request)
            self._stamp(request)
        return await super()._handle(request)

    async def _serve_list(self, request: rendering.Request) -> Any:
        """kmock ignores label selectors; the API server applies them (equality-based here)."""
        payload = await super()._serve_list(request)
        if isinstance(payload, dict) and request.resource is not None:  # kmock leaves these out
            res = request.resource
            info = self.resources.get(res, None)
            kind = info.kind if info is not None and info.kind else str(res.plural).capitalize()
            payload["kind"] = f"{kind}List"
            payload["apiVersion"] = f"{res.group}/{res.version}" if res.group else str(res.version)
        selector = request.params.get("labelSelector")
        if selector and isinstance(payload, dict):
            wanted = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
            payload["items"] = [
                i
                for i in payload["items"]
                if all((i.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in wanted.items())
            ]
        return payload

    def _record(self, request: rendering.Request) -> None:
        res = request.resource
        if res is None or not isinstance(res.plural, str):
            return  # discovery
        plural = res.plural + (f"/{request.subresource}" if request.subresource else "")
        group = res.group or "core"
        verb = {
            enums.action.LIST: "list",
            enums.action.WATCH: "watch",
            enums.action.FETCH: "get",
            enums.action.CREATE: "create",
            enums.action.UPDATE: "patch",
            enums.action.DELETE: "delete",
        }.get(request.action)
        agent = request.headers.get("User-Agent", "")
        if verb and agent.startswith(OPERATOR_AGENTS):
            self.calls[(verb, f"{group}/{plural}")] += 1
        if verb == "create" and isinstance(request.data, dict):
            meta = request.data.get("metadata", {})
            ns = request.namespace or meta.get("namespace") or ""
            self.creates[(f"{group}/{plural}", ns, meta.get("name", ""))] += 1

    def _stamp(self, request: rendering.Request) -> None:
        data = request.data
        if not isinstance(data, dict):
            return
        if request.action == enums.action.CREATE:
            meta = data.setdefault("metadata", {})
            if request.namespace and "namespace" not in meta:
                meta["namespace"] = request.namespace
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_iso())
            meta["resourceVersion"] = str(next(self._rv))
            meta["generation"] = 1
        elif request.action == enums.action.UPDATE and request.name:
            meta = data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self._rv))
            key = (request.resource, request.namespace, request.name)
            if "spec" in data and not request.subresource and key in self._objects:
                current = self._objects[key].get("metadata", {}).get("generation", 1)
                meta["generation"] = int(current) + 1

    # helpers for tests -----------------------------------------------------------------------
    def declare(self) -> None:
        for key, info in BUILTIN.items():
            self.resources[key] = kmock.ResourceInfo(verbs=VERBS, **info)
        for crd in all_crds().values():
            spec = crd["spec"]
            self.resources[f"{spec['group']}/{spec['versions'][0]['name']}/{spec['names']['plural']}"] = (
                kmock.ResourceInfo(
                    kind=spec["names"]["kind"],
                    namespaced=True,
                    verbs=VERBS,
                    singular=spec["names"]["singular"],
                    shortnames=set(spec["names"]["shortNames"]),
                    categories=set(spec["names"]["categories"]),
                    subresources={"status"},
                )
            )
            self.objects[
                "apiextensions.k8s.io/v1/customresourcedefinitions", None, crd["metadata"]["name"]
            ] = crd
        self.objects["v1/namespaces", None, "default"] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "default"},
        }

    def objects_of(self, resource: str, namespace: str = "default") -> list[dict[str, Any]]:
        out = []
        for key in list(self.objects):
            res, ns, _ = key[:3]
            if _resource_key(res) == resource and ns == namespace:
                obj = self.objects[key]
                if not obj.deleted:
                    out.append(dict(obj.raw))
        return out

    def get_object(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.objects[resource, namespace, name]
        except KeyError:
            return None
        return None if obj.deleted else dict(obj.raw)

    def names_of(self, resource: str, namespace: str = "default") -> list[str]:
        """Names of live objects of a kind, without copying them."""
        names = []
        for key in list(self.objects):
            if key[1] == namespace and _resource_key(key[0]) == resource and not self.objects[key].deleted:
                names.append(key[2])
        return names


def _resource_key(res: Any) -> str:
    group = getattr(res, "group", "")
    version = getattr(res, "version", "")
    plural = getattr(res, "plural", "")
    return f"{group}/{version}/{plural}" if group else f"{version}/{plural}"


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulator",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [
                    {
                        "name": "emulator",
                        "context": {"cluster": "emulator", "user": "tester", "namespace": "default"},
                    }
                ],
            }
        )
    )
    return path
