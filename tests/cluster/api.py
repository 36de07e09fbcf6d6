"""A small async client for the harness (the process kubelet and the tests' own calls), built
from a kubeconfig with a client certificate or a token. The operator uses its own client."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml


class ApiError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text}")
        self.status = status
        try:
            self.body: dict[str, Any] = json.loads(text)
        except ValueError:
            self.body = {"message": text}

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


class Api:
    def __init__(self, server: str, context: ssl.SSLContext, headers: Mapping[str, str]) -> None:
        self.server = server.rstrip("/")
        self.context = context
        self.headers = dict(headers)
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Api:
        config = yaml.safe_load(path.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        headers = {}
        if "client-certificate" in user:
            context.load_cert_chain(user["client-certificate"], user["client-key"])
        if "token" in user:
            headers["Authorization"] = f"Bearer {user['token']}"
        return cls(cluster["server"], context, headers)

    async def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                headers={"User-Agent": "conveyor-test-harness", **self.headers},
                connector=aiohttp.TCPConnector(ssl=self.context, limit=64),
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (),
    ) -> Any:
        """The decoded answer; None for a status listed in `ok`; ApiError for any other >= 400.
        A 429 (a CRD's storage still initialising, say) is tried again after its Retry-After,
        as client-go does."""
        http = await self.http()
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=60)
        for attempt in range(10):
            async with http.request(
                method, self.server + path, data=data, params=params, headers=headers, timeout=timeout
            ) as resp:
                text = await resp.text()
                if resp.status == 429 and attempt < 9:
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                    continue
                if resp.status in ok:
                    return None
                if resp.status >= 400:
                    raise ApiError(resp.status, text)
                return json.loads(text) if text else None
        raise AssertionError("unreachable")

    async def watch(
        self,
        path: str,
        params: Mapping[str, str],
        handler: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        """List, hand every object over as ADDED, then watch from that version; re-list when the
        version is too old. Runs until cancelled."""
        while True:
            try:
                listing = await self.call("GET", path, params=params)
                for item in listing.get("items", []):
                    await handler("ADDED", item)
                version = listing["metadata"]["resourceVersion"]
                while True:
                    version = await self._watch_once(path, params, version, handler)
            except asyncio.CancelledError:
                raise
            except _Gone:
                continue
            except (aiohttp.ClientError, ApiError, TimeoutError, OSError) as err:
                print(f"watch {path}: {err!r}; re-listing", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)

    async def _watch_once(
        self,
        path: str,
        params: Mapping[str, str],
        version: str,
        handler: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> str:
        http = await self.http()
        query = {
            **params,
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_read=330)
        async with http.get(self.server + path, params=query, timeout=timeout) as resp:
            if resp.status == 410:
                raise _Gone
            if resp.status >= 400:
                raise ApiError(resp.status, await resp.text())
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise ApiError(int(obj.get("code", 500)), json.dumps(obj))
                version = obj["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    await handler(event["type"], obj)
        return version


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""
