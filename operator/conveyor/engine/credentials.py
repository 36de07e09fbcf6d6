"""Which Secret a pod is given for the artifact store, and whether the operator may give it.

A Pipeline names a Secret and the operator mounts it into pods that may run an image of the
pipeline's choice: without a check, whoever may create a Pipeline reads every Secret of the
namespace through the operator (a confused deputy). So a Secret is mounted only when it opts
in with the label `conveyor.dev/credentials: "true"`. Only someone who may already read the
Secret can set that label (a patch or update of a Secret answers with its data), so the opt-in
never comes from someone the Secret was hidden from.

Stage pods get the read-write Secret; model servers only ever a read-only one, never the
read-write Secret in its place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from conveyor.api.common import S3Store
from conveyor.engine.validation import InvalidResource, Problem

OPT_IN_LABEL = "conveyor.dev/credentials"
OPT_IN_VALUE = "true"

PIPELINE_FIELD = "spec.artifacts.s3.credentialsSecret"
PIPELINE_READ_ONLY_FIELD = "spec.artifacts.s3.readOnlyCredentialsSecret"
DEFAULT_FIELD = "CONVEYOR_CREDENTIALS_SECRET"
DEFAULT_READ_ONLY_FIELD = "CONVEYOR_READ_ONLY_CREDENTIALS_SECRET"


@dataclass(frozen=True)
class SecretUse:
    """A Secret a pod would be given, and the setting that names it (for messages)."""

    name: str
    field: str


@dataclass(frozen=True)
class StoreSecrets:
    """The Secret settings that apply to one store: the pipeline's, else the operator's."""

    read_write: SecretUse | None
    read_only: SecretUse | None


def store_secrets(s3: S3Store | None, default_rw: str | None, default_ro: str | None) -> StoreSecrets:
    """The pipeline's own Secrets when it names a read-write one (its read-only one must then
    be its own too: the operator's belongs to another store); the operator's defaults otherwise."""
    pipeline_rw = s3.credentials_secret if s3 else None
    pipeline_ro = s3.read_only_credentials_secret if s3 else None
    if pipeline_rw:
        rw = SecretUse(pipeline_rw, PIPELINE_FIELD)
        return StoreSecrets(rw, SecretUse(pipeline_ro, PIPELINE_READ_ONLY_FIELD) if pipeline_ro else None)
    ro = (
        SecretUse(pipeline_ro, PIPELINE_READ_ONLY_FIELD)
        if pipeline_ro
        else (SecretUse(default_ro, DEFAULT_READ_ONLY_FIELD) if default_ro else None)
    )
    return StoreSecrets(SecretUse(default_rw, DEFAULT_FIELD) if default_rw else None, ro)


def serving_secret(secrets: StoreSecrets) -> SecretUse | None:
    """The Secret a model server gets: the read-only one. None when the store needs no Secret
    (neither is set: ambient credentials). A read-write Secret without a read-only one is refused:
    a model server that can write could replace the model it and others serve."""
    if secrets.read_only is not None:
        return secrets.read_only
    if secrets.read_write is None:
        return None
    rw = secrets.read_write
    fix_field = PIPELINE_READ_ONLY_FIELD if rw.field == PIPELINE_FIELD else DEFAULT_READ_ONLY_FIELD
    raise NoReadOnlySecret(
        Problem(
            rw.field,
            f"the store's Secret {rw.name!r} is read-write and no read-only Secret is set; "
            "model servers are only given read-only store credentials",
            f"set {fix_field} to a Secret whose credentials can only read the store "
            f"(the chart's bundled MinIO makes one), labelled {OPT_IN_LABEL}={OPT_IN_VALUE}",
        )
    )


class NoReadOnlySecret(InvalidResource):
    """Only a read-write Secret is set for the store a model server reads."""

    def __init__(self, problem: Problem) -> None:
        super().__init__([problem])


def secret_problem(use: SecretUse, namespace: str, labels: Mapping[str, str] | None) -> Problem | None:
    """None when the Secret may be mounted; else what is wrong and how to fix it. `labels` is
    None when the Secret does not exist."""
    label = f"{OPT_IN_LABEL}={OPT_IN_VALUE}"
    if labels is None:
        return Problem(
            use.field,
            f"Secret {use.name!r} not found in namespace {namespace!r}",
            f"create it with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and the label {label}",
        )
    if labels.get(OPT_IN_LABEL) == OPT_IN_VALUE:
        return None
    have = labels.get(OPT_IN_LABEL)
    found = f"its label {OPT_IN_LABEL} is {have!r}" if have is not None else f"it has no label {OPT_IN_LABEL}"
    return Problem(
        use.field,
        f"Secret {use.name!r} has not opted in to being mounted into Conveyor's pods ({found}); "
        "the operator mounts only Secrets that do",
        f"if this namespace's pipelines (custom images included) may read it: "
        f'kubectl label secret {use.name} -n {namespace} {OPT_IN_LABEL}="{OPT_IN_VALUE}"',
    )
