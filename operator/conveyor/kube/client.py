"""The one module that talks to the Kubernetes API server.

A small asyncio client on aiohttp (a dependency of Kopf), logged in as `credentials` says;
a token file is re-read when it changes, every minute and on a 401 (then the request is
retried once). `request` raises typed errors (`conveyor.errors`); each verb decides what it
tolerates: 404 is None for `get`/`patch`, [] for `list`, False for `delete`/`serves`; 409 is
False for `create`. Lists are read in pages.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from conveyor import __version__
from conveyor.api.common import GROUP, VERSION
from conveyor.errors import Conflict, ConveyorError, Gone, NotFound, Transient
from conveyor.kube.credentials import Connection, TokenFile

Body = dict[str, Any]
Items = list[Body]
MERGE_PATCH = "application/merge-patch+json"
# an object's metadata alone: a Secret's labels without its data
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
USER_AGENT = f"conveyor-operator/{__version__}"
PAGE_SIZE = 500
RETRY_DELAY = 5.0  # a 429 or 5xx without a Retry-After


class ApiError(ConveyorError):
    """An error answer of the API server, with its HTTP `status`; the kinds a caller decides
    on are also the `conveyor.errors` kind (as Kopf's `APINotFoundError` is an `APIError`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class ApiNotFound(ApiError, NotFound):
    """404"""


class ApiConflict(ApiError, Conflict):
    """409"""


class NamespaceTerminating(ApiError, Gone):
    """403 on a create in a namespace that is being deleted"""


class ApiUnavailable(ApiError, Transient):
    """429, 5xx"""

    def __init__(self, status: int, message: str, delay: float) -> None:
        super().__init__(status, message)
        self.delay = delay


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
SECRETS = Resource("", "v1", "secrets")


class KubeClient:
    def __init__(self, connection: Connection, clock: Callable[[], float] = time.monotonic) -> None:
        self.conn = connection
        self._session: aiohttp.ClientSession | None = None
        self._token = TokenFile(connection.token_file, clock) if connection.token_file else None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=30),
                connector=aiohttp.TCPConnector(ssl=self.conn.ssl_context, limit=32),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _auth(self) -> dict[str, str]:
        token = self._token.header() if self._token is not None else None
        return {**self.conn.headers, "Authorization": token} if token else dict(self.conn.headers)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, Any]:
        """(status, decoded body) of a successful answer; a typed error otherwise (see `_error`).
        A 401 re-reads the token file, if there is one, and tries once more (a static token or
        a client certificate has nothing to reload)."""
        # JSON has no NaN or infinity: a ValueError here rather than a 400 from the server
        data = None if body is None else json.dumps(body, allow_nan=False)
        answer = await self._send(method, path, data, params, content_type, accept)
        if answer[0] == 401 and self._token is not None:
            self._token.header(force=True)
            answer = await self._send(method, path, data, params, content_type, accept)
        status, payload, text, retry_after = answer
        if status >= 400:
            raise _error(f"{method} {path}", status, payload, text, retry_after)
        if payload is None and text:
            raise ApiError(status, f"{method} {path}: not JSON: {text[:200]}")
        return status, payload

    async def _send(
        self,
        method: str,
        path: str,
        data: str | None,
        params: Mapping[str, str] | None,
        content_type: str,
        accept: str,
    ) -> tuple[int, Any, str, str | None]:
        http = await self._http()
        headers = {"Content-Type": content_type, "Accept": accept, **self._auth()}
        try:
            async with http.request(
                method, self.conn.server + path, data=data, params=params, headers=headers
            ) as resp:
                text = await resp.text()
                busy = resp.status == 429 or resp.status >= 500
                retry_after = resp.headers.get("Retry-After") if busy else None
                status = resp.status
        except aiohttp.ClientConnectorCertificateError:
            raise  # a TLS setup that is wrong stays wrong
        except (aiohttp.ClientConnectionError, TimeoutError) as err:
            raise Transient(f"{method} {path}: {type(err).__name__}: {err}", RETRY_DELAY) from err
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None  # e.g. the plain-text "404 page not found" of an API group not served
        return status, payload, text, retry_after

    # generic verbs -----------------------------------------------------------------------
    async def get(self, res: Resource, namespace: str | None, name: str) -> Body | None:
        try:
            _, body = await self.request("GET", res.path(namespace, name))
        except NotFound:
            return None
        return body  # type: ignore[no-any-return]

    async def get_metadata(self, res: Resource, namespace: str | None, name: str) -> Body | None:
        """An object's metadata only (a PartialObjectMetadata; None if it is not there): the
        labels of a Secret without its data, which never reaches the operator. RBAC still
        needs `get` on the resource: it has no metadata-only verb."""
        try:
            _, body = await self.request("GET", res.path(namespace, name), accept=PARTIAL_METADATA)
        except NotFound:
            return None
        return body  # type: ignore[no-any-return]

    async def list(
        self, res: Resource, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[Body]:
        """Objects of a kind, page by page, filtered by labels on the server and, defensively,
        here too; [] where the API group is not served."""
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else {}
        try:
            items = await self._pages(res.path(namespace), params)
        except NotFound:
            return []
        return [i for i in items if _has_labels(i, labels)] if labels else items

    async def _pages(self, path: str, params: dict[str, str]) -> Items:
        items: Items = []
        page = {**params, "limit": str(PAGE_SIZE)}
        while True:
            _, body = await self.request("GET", path, params=page)
            items.extend((body or {}).get("items") or [])
            token = ((body or {}).get("metadata") or {}).get("continue")
            if not token:
                return items
            page = {**params, "limit": str(PAGE_SIZE), "continue": token}

    async def create(self, res: Resource, namespace: str | None, body: Body) -> bool:
        """Create; False if the name was taken (409). That is success for an idempotent create
        only if the object there is the one meant: a caller that can't be sure (a child of an
        earlier owner of the same name) reads it and checks its owner. NotFound (the namespace
        is gone) and Gone (it is being deleted) propagate."""
        try:
            await self.request("POST", res.path(namespace), body)
        except Conflict:
            return False
        return True

    async def patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        patch: Body,
        sub: str | None = None,
        resource_version: str | None = None,
    ) -> Body | None:
        """A JSON merge patch; None if the object is not there. With `resource_version` the
        patch applies only to that version of the object, else Conflict (a lost update)."""
        if resource_version is not None:
            meta = {**(patch.get("metadata") or {}), "resourceVersion": resource_version}
            patch = {**patch, "metadata": meta}
        try:
            _, body = await self.request(
                "PATCH", res.path(namespace, name, sub), patch, content_type=MERGE_PATCH
            )
        except NotFound:
            return None
        return body  # type: ignore[no-any-return]

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False if it was already gone."""
        opts = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await self.request("DELETE", res.path(namespace, name), opts)
        except NotFound:
            return False
        return True

    async def serves(self, res: Resource) -> bool:
        """Whether the API server knows a resource (a CRD that may not be installed)."""
        try:
            _, body = await self.request("GET", f"/apis/{res.group}/{res.version}")
        except NotFound:
            return False
        return any(r.get("name") == res.plural for r in (body or {}).get("resources", []))

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
        most 253 characters, however long the object's name). Not posted, silently, where the
        namespace is gone."""
        meta = involved.get("metadata", {})
        stamp_hex = f"{int(now.timestamp() * 1e6):x}"
        name = f"{str(meta.get('name'))[: 252 - len(stamp_hex)].rstrip('.-')}.{stamp_hex}"
        stamp = now.isoformat().replace("+00:00", "Z")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": meta.get("namespace")},
            "involvedObject": {k: involved.get(k) for k in ("apiVersion", "kind")}
            | {k: meta.get(k) for k in ("name", "namespace", "uid")},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": "conveyor-operator"},
            "reportingComponent": "conveyor.dev/operator",
        }
        with contextlib.suppress(NotFound):
            await self.create(EVENTS, meta.get("namespace"), event)


def _error(what: str, status: int, payload: Any, text: str, retry_after: str | None) -> ApiError:
    """The typed error for an error answer: NotFound (404), Conflict (409), Gone (403, the
    namespace is being terminated), Transient (429, 5xx; after Retry-After), else ApiError."""
    status_obj = payload if isinstance(payload, dict) else {}
    message = f"{what}: {status_obj.get('message', text.strip()[:200])}"
    if status == 404:
        return ApiNotFound(status, message)
    if status == 409:
        return ApiConflict(status, message)
    causes = {c.get("reason") for c in (status_obj.get("details") or {}).get("causes") or []}
    if status == 403 and ("NamespaceTerminating" in causes or "because it is being terminated" in message):
        return NamespaceTerminating(status, message)
    if status == 429 or status >= 500:
        return ApiUnavailable(status, message, _delay(retry_after))
    return ApiError(status, message)


def _delay(retry_after: str | None) -> float:
    """The Retry-After header's seconds (the API server sets it from its Status's
    retryAfterSeconds); RETRY_DELAY without one, or for an HTTP date."""
    try:
        return max(0.0, float(retry_after)) if retry_after else RETRY_DELAY
    except ValueError:
        return RETRY_DELAY


def _has_labels(obj: Body, labels: Mapping[str, str]) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())
