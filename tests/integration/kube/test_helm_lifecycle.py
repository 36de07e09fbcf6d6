"""`helm upgrade` and `helm uninstall` of the chart against the real API server: values
change the operator's Deployment, an uninstall keeps the CRDs (and so every user's resources),
and a reinstall adopts them again."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.cluster.api import Api
from tests.cluster.cluster import CHART, OPERATOR_SA, RELEASE, RELEASE_NAMESPACE, Cluster
from tests.integration.kube.conftest import create, get
from tests.integration.kube.runs_helpers import custom, pipeline


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


async def test_helm_upgrade_then_uninstall_keeps_the_crds_and_resources(
    cluster: Cluster, kube: Api, ns: str, s3: dict[str, str]
) -> None:
    await asyncio.to_thread(
        cluster.helm,
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        RELEASE_NAMESPACE,
        "--reuse-values",
        "--set",
        "operator.jobTTLSeconds=120",
        "--wait",
    )
    dep = await get(kube, "deployments", RELEASE_NAMESPACE, RELEASE)
    assert dep is not None and env_of(dep)["CONVEYOR_JOB_TTL_SECONDS"] == "120"
    status = (await asyncio.to_thread(cluster.helm, "status", RELEASE, "-n", RELEASE_NAMESPACE)).stdout
    assert "REVISION: 2" in status and "STATUS: deployed" in status

    await create(kube, pipeline("kept", [custom("a", "pass")], s3), ns)
    try:
        await asyncio.to_thread(cluster.helm, "uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait")
        sa = f"/api/v1/namespaces/{RELEASE_NAMESPACE}/serviceaccounts/{OPERATOR_SA}"
        assert await kube.call("GET", sa, ok=(404,)) is None
        for crd in ("pipelines", "pipelineruns", "modeldeployments"):
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}.conveyor.dev"
            assert await kube.call("GET", path, ok=(404,)) is not None, crd
        assert await get(kube, "pipelines", ns, "kept") is not None
    finally:
        # the rest of the session needs the release (and a token of its new ServiceAccount)
        await asyncio.to_thread(cluster.install)
    assert await get(kube, "pipelines", ns, "kept") is not None


async def test_the_chart_grants_the_operator_no_more_than_it_uses(cluster: Cluster, ns: str) -> None:
    """What the API server itself answers for the chart's ServiceAccount (`kubectl auth can-i`):
    the operator's tests pass with these grants; these are refused."""
    who = f"system:serviceaccount:{RELEASE_NAMESPACE}:{OPERATOR_SA}"

    async def can(verb: str, resource: str) -> str:
        proc = await asyncio.to_thread(
            cluster.kubectl, "auth", "can-i", verb, resource, "-n", ns, "--as", who, check=False
        )
        return proc.stdout.strip()

    for verb, resource in (
        ("create", "jobs.batch"),
        ("patch", "pipelineruns.conveyor.dev/status"),
        ("list", "pods"),
        ("create", "events"),
        ("get", "secrets"),  # a Secret's opt-in label, read as metadata only
    ):
        assert await can(verb, resource) == "yes", (verb, resource)
    for verb, resource in (
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "pods"),
        ("delete", "pipelines.conveyor.dev"),
        ("patch", "modeldeployments.conveyor.dev"),
        ("update", "jobs.batch"),
        ("delete", "deployments.apps"),
    ):
        assert await can(verb, resource) == "no", (verb, resource)


async def test_children_need_the_finalizers_grant_under_owner_reference_enforcement(
    cluster: Cluster, kube: Api, ns: str, s3: dict[str, str]
) -> None:
    """Stage Jobs carry `blockOwnerDeletion: true`; the API server's
    OwnerReferencesPermissionEnforcement then requires `update` on pipelineruns/finalizers. The
    chart grants it: without that rule, the operator's first Job create is refused."""
    from tests.integration.kube.conftest import OperatorProcess, operator_settings, wait_for
    from tests.integration.kube.runs_helpers import run_of

    role = await kube.call("GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{RELEASE}")
    kept = [r for r in role["rules"] if not any(x.endswith("/finalizers") for x in r["resources"])]
    assert len(kept) < len(role["rules"])
    await kube.call(
        "PUT", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{RELEASE}", {**role, "rules": kept}
    )
    proc = OperatorProcess(operator_settings(s3["endpoint"]))
    try:
        await create(kube, pipeline("needs-grant", [custom("a", "pass")], s3), ns)
        await create(kube, run_of("needs-grant", "r1"), ns)
        await proc.start()

        def refused() -> list[str]:
            return [
                e["responseStatus"].get("message", "")
                for e in cluster.plane.audit_events()
                if e.get("verb") == "create"
                and e["objectRef"].get("resource") == "jobs"
                and e["objectRef"].get("namespace") == ns
                and e["responseStatus"].get("code") == 403
            ]

        messages = await wait_for(refused, 60, "the Job create to be refused")
        assert "cannot set blockOwnerDeletion" in messages[0]
    finally:
        await proc.stop()
        path = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{RELEASE}"
        now = await kube.call("GET", path)
        await kube.call("PUT", path, {**now, "rules": role["rules"]})  # the chart's rules again
    restored = (await kube.call("GET", path))["rules"]
    assert any(x.endswith("/finalizers") for r in restored for x in r["resources"])
