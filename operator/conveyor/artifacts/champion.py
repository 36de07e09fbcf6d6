"""Promotion as a compare-and-swap on a pipeline's champion record, and the versions it leaves.

`champion.json` holds the latest promoted model and its version number. A promoter reads it
with a token (`current`), decides against that champion, and writes the next version only if
the record still has that token (`promote`); when another run promoted meanwhile, nothing is
written and the promoter reads the new champion and decides again. So two overlapping runs
can never both replace the same champion, and a worse model cannot overwrite a better one that
landed while it was deciding.

The winner of version N then records it under `_versions/` (`<ns>/<pipeline>/_versions/
<N>.json`; `_` cannot start a run's name, so no run's folder collides). Only one promoter can
win version N, so that file is never contended; a promoter that dies between its swap and this
write leaves a gap that the next promoter fills from the champion (`promote` repairs it) and
that `list_versions` fills meanwhile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from conveyor.artifacts.layout import (
    CHAMPION_FIX,
    JSON,
    Champion,
    CorruptRecord,
    champion_key,
    relocated_champion,
)
from conveyor.artifacts.store import Store, StoreError

VERSIONS = "_versions"


@dataclass(frozen=True)
class ChampionState:
    """The champion as read, and the token a swap must still find."""

    champion: Champion | None
    token: str | None

    @property
    def next_version(self) -> int:
        return self.champion.version + 1 if self.champion else 1


def _encode(champion: Champion) -> bytes:
    return json.dumps(champion.model_dump(mode="json"), indent=2, sort_keys=True).encode()


def current(store: Store, namespace: str, pipeline: str) -> ChampionState:
    found = store.read_versioned(champion_key(namespace, pipeline))
    if found is None:
        return ChampionState(None, None)
    data, token = found
    try:
        return ChampionState(relocated_champion(store, Champion.model_validate_json(data)), token)
    except ValidationError as err:
        where = store.uri(champion_key(namespace, pipeline))
        raise CorruptRecord(
            f"{where} is not a valid champion record ({err.errors()[0]['msg']}); {CHAMPION_FIX}"
        ) from None


def promote(store: Store, namespace: str, pipeline: str, state: ChampionState, new: Champion) -> bool:
    """Make `new` the champion if the champion is still `state`'s; False when it changed.
    `new.version` must be `state.next_version`."""
    if new.version != state.next_version:
        raise ValueError(f"version {new.version} does not follow the champion's ({state.next_version - 1})")
    if state.champion is not None:
        _ensure_recorded(store, namespace, pipeline, state.champion)
    if not store.write_if(champion_key(namespace, pipeline), _encode(new), JSON, state.token):
        return False
    store.write_bytes(version_key(namespace, pipeline, new.version), _encode(new), JSON)
    return True


def _ensure_recorded(store: Store, namespace: str, pipeline: str, champion: Champion) -> None:
    key = version_key(namespace, pipeline, champion.version)
    if not store.exists(key):
        store.write_bytes(key, _encode(champion), JSON)


def version_key(namespace: str, pipeline: str, version: int) -> str:
    return f"{namespace}/{pipeline}/{VERSIONS}/{version:08d}.json"


def _read(store: Store, key: str) -> Champion | None:
    try:
        return relocated_champion(store, Champion.model_validate_json(store.read_bytes(key)))
    except (StoreError, ValidationError):
        return None


def read_version(store: Store, namespace: str, pipeline: str, version: int) -> Champion | None:
    """One promoted version of a pipeline's model, or None if there is no such version."""
    found = _read(store, version_key(namespace, pipeline, version))
    if found is None:
        latest = current(store, namespace, pipeline).champion
        found = latest if latest is not None and latest.version == version else None
    return found


def list_versions(store: Store, namespace: str, pipeline: str) -> list[Champion]:
    """Every promotion of the pipeline, oldest first (the last one is the champion)."""
    found: dict[int, Champion] = {}
    for key in store.list(f"{namespace}/{pipeline}/{VERSIONS}/"):
        version = _read(store, key)
        if version is not None:
            found[version.version] = version
    latest = current(store, namespace, pipeline).champion
    if latest is not None:
        found.setdefault(latest.version, latest)
    return [found[v] for v in sorted(found)]
