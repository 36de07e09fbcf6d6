"""Builders and readers shared by the operator tests on the real control plane."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import yaml

from tests.cluster.api import Api
from tests.cluster.cluster import CREDENTIALS_SECRET, Cluster
from tests.conftest import EXAMPLES
from tests.integration.kube.conftest import get, items

FINISHED = ("Succeeded", "Failed", "Cancelled")


def breast_cancer(s3: dict[str, str], name: str = "breast-cancer") -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / "breast-cancer" / "pipeline.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["artifacts"] = {
        "s3": {
            "bucket": s3["bucket"],
            "prefix": "conveyor",
            "endpoint": s3["endpoint"],
            "credentialsSecret": CREDENTIALS_SECRET,
            # model servers get only this one; the shared S3 server checks no credentials
            "readOnlyCredentialsSecret": CREDENTIALS_SECRET,
        }
    }
    return dict(doc)


def run_of(pipeline: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": pipeline}, **spec},
    }


def custom(name: str, code: str, **extra: Any) -> dict[str, Any]:
    """A custom stage: the process kubelet runs its command on this machine."""
    return {
        "name": name,
        "image": "python:3.11-slim",
        "command": [sys.executable, "-c", textwrap.dedent(code)],
        **extra,
    }


def pipeline(name: str, stages: list[dict[str, Any]], s3: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"stages": stages, "artifacts": {"s3": {"bucket": s3["bucket"], "prefix": name}}, **spec},
    }


async def run_status(kube: Api, ns: str, name: str) -> dict[str, Any]:
    obj = await get(kube, "pipelineruns", ns, name) or {}
    return dict(obj.get("status") or {})


async def finished(kube: Api, ns: str, name: str) -> dict[str, Any] | None:
    st = await run_status(kube, ns, name)
    return st if st.get("phase") in FINISHED else None


def stage_map(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in st.get("stages", [])}


async def events_of(kube: Api, ns: str, involved: str) -> list[tuple[str, str]]:
    return [
        (e["reason"], e["message"])
        for e in await items(kube, "events", ns)
        if e["involvedObject"]["name"] == involved
        and e.get("source", {}).get("component") == "conveyor-operator"
    ]


def job_creations(cluster: Cluster, ns: str) -> list[str]:
    """Names of the Jobs created in a namespace, one entry per successful create, from the API
    server's audit log (whoever created them)."""
    return [
        e["objectRef"].get("name") or e.get("requestObject", {}).get("metadata", {}).get("name", "?")
        for e in cluster.plane.audit_events()
        if e.get("verb") == "create"
        and e["objectRef"].get("resource") == "jobs"
        and e["objectRef"].get("namespace") == ns
        and e.get("responseStatus", {}).get("code") == 201
    ]
