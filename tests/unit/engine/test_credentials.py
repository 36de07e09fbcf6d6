"""Which store Secret a pod gets, and whether it has opted in to being mounted."""

from __future__ import annotations

import pytest

from conveyor.api.common import S3Store
from conveyor.engine.credentials import (
    DEFAULT_FIELD,
    DEFAULT_READ_ONLY_FIELD,
    OPT_IN_LABEL,
    PIPELINE_FIELD,
    PIPELINE_READ_ONLY_FIELD,
    NoReadOnlySecret,
    SecretUse,
    StoreSecrets,
    secret_problem,
    serving_secret,
    store_secrets,
)
from conveyor.engine.validation import InvalidResource


def s3(rw: str | None = None, ro: str | None = None) -> S3Store:
    return S3Store(bucket="bkt", credentials_secret=rw, read_only_credentials_secret=ro)


@pytest.mark.parametrize(
    ("store", "default_rw", "default_ro", "expected"),
    [
        pytest.param(None, None, None, StoreSecrets(None, None), id="nothing-set"),
        pytest.param(
            None,
            "op-rw",
            "op-ro",
            StoreSecrets(SecretUse("op-rw", DEFAULT_FIELD), SecretUse("op-ro", DEFAULT_READ_ONLY_FIELD)),
            id="operator-defaults",
        ),
        pytest.param(
            s3(),
            "op-rw",
            "op-ro",
            StoreSecrets(SecretUse("op-rw", DEFAULT_FIELD), SecretUse("op-ro", DEFAULT_READ_ONLY_FIELD)),
            id="pipeline-store-without-secrets-uses-defaults",
        ),
        pytest.param(
            s3("p-rw", "p-ro"),
            "op-rw",
            "op-ro",
            StoreSecrets(SecretUse("p-rw", PIPELINE_FIELD), SecretUse("p-ro", PIPELINE_READ_ONLY_FIELD)),
            id="pipeline-own",
        ),
        pytest.param(
            s3("p-rw"),
            "op-rw",
            "op-ro",
            StoreSecrets(SecretUse("p-rw", PIPELINE_FIELD), None),
            id="pipeline-rw-never-paired-with-operator-ro",
        ),
        pytest.param(
            s3(ro="p-ro"),
            "op-rw",
            None,
            StoreSecrets(SecretUse("op-rw", DEFAULT_FIELD), SecretUse("p-ro", PIPELINE_READ_ONLY_FIELD)),
            id="pipeline-ro-only",
        ),
    ],
)
def test_store_secrets(
    store: S3Store | None, default_rw: str | None, default_ro: str | None, expected: StoreSecrets
) -> None:
    assert store_secrets(store, default_rw, default_ro) == expected


def test_model_server_gets_the_read_only_secret() -> None:
    secrets = StoreSecrets(SecretUse("rw", PIPELINE_FIELD), SecretUse("ro", PIPELINE_READ_ONLY_FIELD))
    assert serving_secret(secrets) == SecretUse("ro", PIPELINE_READ_ONLY_FIELD)
    assert serving_secret(StoreSecrets(None, None)) is None  # ambient credentials: nothing to mount


@pytest.mark.parametrize(
    ("rw", "fix_field"),
    [
        (SecretUse("rw", PIPELINE_FIELD), PIPELINE_READ_ONLY_FIELD),
        (SecretUse("rw", DEFAULT_FIELD), DEFAULT_READ_ONLY_FIELD),
    ],
)
def test_model_server_never_gets_the_read_write_secret(rw: SecretUse, fix_field: str) -> None:
    with pytest.raises(NoReadOnlySecret) as err:
        serving_secret(StoreSecrets(rw, None))
    assert isinstance(err.value, InvalidResource)
    (problem,) = err.value.problems
    assert problem.path == rw.field
    assert "'rw' is read-write" in problem.message
    assert fix_field in problem.fix


USE = SecretUse("team-s3", PIPELINE_FIELD)


@pytest.mark.parametrize(
    ("labels", "allowed"),
    [
        ({OPT_IN_LABEL: "true"}, True),
        ({OPT_IN_LABEL: "true", "other": "x"}, True),
        ({}, False),
        ({OPT_IN_LABEL: "false"}, False),
        ({OPT_IN_LABEL: "True"}, False),  # label values are exact
        ({"conveyor.dev/credential": "true"}, False),
    ],
)
def test_only_secrets_with_the_opt_in_label_are_allowed(labels: dict[str, str], allowed: bool) -> None:
    problem = secret_problem(USE, "ml", labels)
    assert (problem is None) is allowed
    if problem is not None:
        assert problem.path == PIPELINE_FIELD
        assert "'team-s3'" in problem.message and OPT_IN_LABEL in problem.message
        assert problem.fix.endswith(f'kubectl label secret team-s3 -n ml {OPT_IN_LABEL}="true"')


def test_a_missing_secret_is_named_with_how_to_create_it() -> None:
    problem = secret_problem(USE, "ml", None)
    assert problem is not None
    assert problem.message == "Secret 'team-s3' not found in namespace 'ml'"
    assert f"{OPT_IN_LABEL}=true" in problem.fix
