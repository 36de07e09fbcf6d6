"""A pipeline's learned data expectations: `<ns>/<pipeline>/expectations/<stage>.json`.

A validate stage given no expectations infers them from the first data it sees and keeps them
here; later runs check their data against them. Kept in one form (`canonical`), the bytes a
validate stage also writes as its `expectations` output, so that a run can tell whether a
cached validation checked the data against the expectations its pipeline holds now: the digest
of one is the digest of the other (`runs.context` relies on it).
"""

from __future__ import annotations

import hashlib
import json

from pydantic import ValidationError

from conveyor.api.stages import Expectations
from conveyor.artifacts.store import Store, StoreError
from conveyor.errors import UserError

JSON = "application/json"
FIX = "delete it to have the next run infer them again, or correct it"


class CorruptExpectations(UserError):
    """The stored expectations do not parse: the message names the file and the fix."""


def key(namespace: str, pipeline: str, stage: str) -> str:
    return f"{namespace}/{pipeline}/expectations/{stage}.json"


def canonical(exp: Expectations) -> bytes:
    """The one serialisation of `exp`: the same expectations always give the same bytes."""
    value = exp.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(value, indent=2, sort_keys=True).encode()


def digest(exp: Expectations) -> str:
    return hashlib.sha256(canonical(exp)).hexdigest()


def read(store: Store, namespace: str, pipeline: str, stage: str) -> Expectations | None:
    """The pipeline's expectations for `stage`; None when it has none yet."""
    where = key(namespace, pipeline, stage)
    try:
        data = store.read_bytes(where)
    except StoreError:
        return None
    try:
        return Expectations.model_validate(json.loads(data))
    except (ValueError, ValidationError) as err:  # JSONDecodeError and UnicodeDecodeError too
        reason = str(err).splitlines()[0]
        raise CorruptExpectations(
            f"{store.uri(where)} does not hold data expectations ({reason}); {FIX}"
        ) from None


def keep(store: Store, namespace: str, pipeline: str, stage: str, exp: Expectations) -> bool:
    """Keep `exp` as the pipeline's expectations unless it has some already (a create-only
    write: of two runs inferring at once, the first keeps its own); False if it had."""
    return store.write_if(key(namespace, pipeline, stage), canonical(exp), JSON, token=None)
