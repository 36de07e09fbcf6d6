"""The keys of a store's records (DESIGN.md, "Artifacts"), spelled once: `layout` reads and
writes the records through them, and so does `conveyor run`'s answer from a run memo
(`local.fastrun`), which imports no pydantic. Pure strings, nothing of Conveyor imported.

<ns>/<pipeline>/<run>/.claim                   the run's name taken (create-only)
<ns>/<pipeline>/<run>/<stage>/outputs.json     a stage's committed result (written last)
<ns>/<pipeline>/<run>/<stage>/metrics.json
<ns>/<pipeline>/<run>/run.json                 lineage
<ns>/<pipeline>/champion.json                  the promoted model
cache/<cache key>.json                         pointer to a reusable stage result
cache/runs/<request digest>.json               run memo: a fully cached run's answer
"""

from __future__ import annotations

RUN_RECORD = "run.json"
RUN_CLAIM = ".claim"
OUTPUTS = "outputs.json"
METRICS = "metrics.json"
CACHE = "cache"
MEMOS = f"{CACHE}/runs"


def run_prefix(namespace: str, pipeline: str, run: str) -> str:
    return f"{namespace}/{pipeline}/{run}"


def stage_prefix(namespace: str, pipeline: str, run: str, stage: str) -> str:
    return f"{run_prefix(namespace, pipeline, run)}/{stage}"


def record_key(namespace: str, pipeline: str, run: str) -> str:
    return f"{run_prefix(namespace, pipeline, run)}/{RUN_RECORD}"


def claim_key(namespace: str, pipeline: str, run: str) -> str:
    return f"{run_prefix(namespace, pipeline, run)}/{RUN_CLAIM}"


def cache_pointer_key(key: str) -> str:
    """The store key of the pointer recorded for a stage cache key."""
    return f"{CACHE}/{key}.json"


def champion_key(namespace: str, pipeline: str) -> str:
    return f"{namespace}/{pipeline}/champion.json"


def memo_key(digest: str) -> str:
    """The run memo of a request (`local.memo`)."""
    return f"{MEMOS}/{digest}.json"
