"""The one module that talks to the Kubernetes API server.

A small asyncio client on aiohttp (already a dependency of Kopf); credentials come from the
`kubernetes` package's loaders (in-cluster service account, else kubeconfig), the same way
Kopf logs in. It is the only place that catches API errors: 409 on create and 404 on delete
count as success, a 404 on read is None.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from conveyor import __version__
from conveyor.api.common import GROUP, VERSION

Body = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = f"conveyor-operator/{__version__}"


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        tail = f"/{name}" if name else ""
        return f"{base}{ns}/{self.plural}{tail}" + (f"/{sub}" if sub else "")


PIPELINES = Resource(GROUP, VERSION, "pipelines")
PIPELINERUNS = Resource(GROUP, VERSION, "pipelineruns")
MODELDEPLOYMENTS = Resource(GROUP, VERSION, "modeldeployments")
JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
DEPLOYMENTS = Resource("apps", "v1", "deployments")
SERVICES = Resource("", "v1", "services")
SERVICEMONITORS = Resource("monitoring.coreos.com", "v1", "servicemonitors")
PROMETHEUSRULES = Resource("monitoring.coreos.com", "v1", "prometheusrules")
EVENTS = Resource("", "v1", "events")


@dataclass
class Connection:
    server: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | bool = True

    @classmethod
    def from_environment(cls) -> Connection:
        """In-cluster service account, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
        import kubernetes

        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            # $KUBECONFIG as it is now (the package reads it once, at import)
            kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
        config = kubernetes.client.Configuration.get_default_copy()
        token = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
            "authorization"
        )
        headers = {"Authorization": token} if token else {}
        context: ssl.SSLContext | bool = True
        if config.host.startswith("https"):
            context = ssl.create_default_context(cafile=config.ssl_ca_cert)
            if config.cert_file:
                context.load_cert_chain(config.cert_file, config.key_file)
            if not config.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return cls(server=config.host.rstrip("/"), headers=headers, ssl_context=context)


class KubeClient:
    def __init__(self, connection: Connection) -> None:
        self.conn = connection
        self._session: aiohttp.ClientSession | None = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT, **self.conn.headers},
                timeout=aiohttp.ClientTimeout(total=30),
                connector=aiohttp.TCPConnector(ssl=self.conn.ssl_context, limit=32),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        http = await self._http()
        # JSON has no NaN or infinity: refuse to send them (a ValueError) rather than have
        # the API server reject the request.
        data = None if body is None else json.dumps(body, allow_nan=False)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with http.request(
            method, self.conn.server + path, data=data, params=params, headers=headers
        ) as resp:
            text = await resp.text()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                if resp.status < 400:
                    raise ApiError(resp.status, f"{method} {path}: not JSON: {text[:200]}") from None
                payload = None  # the plain-text "404 page not found" of an API group not served
            if resp.status >= 400 and resp.status not in (404, 409):
                message = payload.get("message", text) if isinstance(payload, dict) else text
                raise ApiError(resp.status, f"{method} {path}: {message}")
            return resp.status, payload

    # generic verbs -----------------------------------------------------------------------
    async def get(self, res: Resource, namespace: str | None, name: str) -> Body | None:
        status, body = await self.request("GET", res.path(namespace, name))
        return None if status == 404 else body

    async def list(
        self, res: Resource, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[Body]:
        """Objects of a kind, filtered by labels on the server and, defensively, here too."""
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        status, body = await self.request("GET", res.path(namespace), params=params)
        if status == 404 or not body:
            return []
        items: list[Body] = body.get("items", [])
        if labels:
            items = [i for i in items if _has_labels(i, labels)]
        return items

    async def create(self, res: Resource, namespace: str | None, body: Body) -> bool:
        """Create; False if the name was taken (409). That is success for an idempotent create
        only if the object there is the one meant: a caller that can't be sure (a child of an
        earlier owner of the same name) reads it and checks its owner."""
        status, _ = await self.request("POST", res.path(namespace), body)
        return status != 409

    async def patch(
        self, res: Resource, namespace: str | None, name: str, patch: Body, sub: str | None = None
    ) -> Body | None:
        status, body = await self.request(
            "PATCH", res.path(namespace, name, sub), patch, content_type=MERGE_PATCH
        )
        return None if status == 404 else body

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False if it was already gone."""
        opts = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        status, _ = await self.request("DELETE", res.path(namespace, name), opts)
        return status != 404

    async def serves(self, res: Resource) -> bool:
        """Whether the API server knows a resource (a CRD that may not be installed)."""
        status, body = await self.request("GET", f"/apis/{res.group}/{res.version}")
        return status == 200 and any(r.get("name") == res.plural for r in (body or {}).get("resources", []))

    async def get_text(self, url: str) -> str | None:
        """A plain HTTP GET outside the API server (a model server's /metrics); a session of
        its own, so the API server's credentials are never sent elsewhere."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
                http.get(url, headers={"User-Agent": USER_AGENT}) as resp,
            ):
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def post_event(self, involved: Body, type_: str, reason: str, message: str, now: datetime) -> None:
        """A core/v1 Event about an object, named uniquely by its time (a DNS subdomain of at
        most 253 characters, however long the object's name)."""
        meta = involved.get("metadata", {})
        stamp_hex = f"{int(now.timestamp() * 1e6):x}"
        name = f"{str(meta.get('name'))[: 252 - len(stamp_hex)].rstrip('.-')}.{stamp_hex}"
        stamp = now.isoformat().replace("+00:00", "Z")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": "conveyor-operator"},
            "reportingComponent": "conveyor.dev/operator",
        }
        await self.create(EVENTS, meta.get("namespace"), event)


def _has_labels(obj: Body, labels: Mapping[str, str]) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())
