"""Whether the Secrets a run's or a model server's pods would be given have opted in
(`engine.credentials`): read as metadata only, so a Secret's data never reaches the operator."""

from __future__ import annotations

from conveyor.engine.credentials import SecretUse, secret_problem
from conveyor.engine.validation import InvalidResource
from conveyor.kube.client import SECRETS, KubeClient


async def check_secrets(kube: KubeClient, namespace: str, *uses: SecretUse | None) -> None:
    """InvalidResource naming each Secret that is missing or has not opted in."""
    problems = []
    for use in uses:
        if use is None:
            continue
        meta = await kube.get_metadata(SECRETS, namespace, use.name)
        labels = None if meta is None else dict((meta.get("metadata") or {}).get("labels") or {})
        problem = secret_problem(use, namespace, labels)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise InvalidResource(problems)
