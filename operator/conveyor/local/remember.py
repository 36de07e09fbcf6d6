"""The full path's side of run memos (`local.memo`): what a run reads from its store, and the
memo written when it ends Succeeded with every stage from the cache.

The run's store is wrapped in a `RecordingStore`, which notes the digest of every record the
run reads and every artifact it verifies. So the memo names exactly what the run core looked
at (cache pointers, the champion, learned expectations, a decision, whatever it reads next
year), not a list kept beside it. A memo is written only when nothing the run read changed
while it ran or since, the run wrote nothing outside its own folder (no champion, no
expectations kept), and its request has nothing the fast path cannot check again cheaply: an
S3 store or source, a custom stage (its code is a local file or an image), a timeout, a resumed
run, `promotion: Manual`, a stage with `cache: false`, a PipelineRun whose Pipeline is in
another file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from conveyor import __version__
from conveyor.artifacts import keys
from conveyor.artifacts.localfiles import MISSING, source_fact
from conveyor.artifacts.store import LocalStore, Store, StoreError
from conveyor.engine.invocation import ArtifactRef
from conveyor.local import memo as memos

if TYPE_CHECKING:
    from conveyor.artifacts.layout import RunRecord
    from conveyor.local.executor import LocalRun

MAX_CONSOLES = 8  # summaries kept per memo, one per terminal set-up


class RecordingStore(Store):
    """A local store that notes what is read (key -> digest of the bytes, or `missing`), what
    is verified and what is written."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.location = inner.location
        self.reads: dict[str, str] = {}
        self.verified: dict[str, tuple[int, str]] = {}
        self.written: set[str] = set()
        self.unsure = False  # read twice and found different, listed, or failed to verify

    def _note(self, key: str, digest: str) -> None:
        if self.reads.setdefault(key, digest) != digest:
            self.unsure = True

    def digest_of(self, key: str) -> str:
        try:
            return hashlib.sha256(self.inner.read_bytes(key)).hexdigest()
        except (StoreError, IsADirectoryError):
            return MISSING

    def write_file(self, key: str, path: Path, media_type: str) -> ArtifactRef:
        self.written.add(key)
        return self.inner.write_file(key, path, media_type)

    def read_bytes(self, key: str) -> bytes:
        try:
            data = self.inner.read_bytes(key)
        except StoreError:
            self._note(key, MISSING)
            raise
        self._note(key, hashlib.sha256(data).hexdigest())
        return data

    def exists(self, key: str) -> bool:
        self._note(key, self.digest_of(key))
        return self.inner.exists(key)

    def list(self, prefix: str) -> list[str]:
        self.unsure = True  # a listing is not one record the memo can check again
        return self.inner.list(prefix)

    def local_path(self, key: str, workdir: Path) -> Path:
        self._note(key, self.digest_of(key))
        return self.inner.local_path(key, workdir)

    def verify(self, ref: ArtifactRef) -> bool:
        ok = self.inner.verify(ref)
        if ok:
            self.verified[self.inner.key(ref.uri)] = (ref.bytes, ref.sha256)
        else:
            self.unsure = True
        return ok

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        found = self.inner.read_versioned(key)
        self._note(key, MISSING if found is None else hashlib.sha256(found[0]).hexdigest())
        return found

    def write_if(self, key: str, data: bytes, media_type: str, token: str | None) -> bool:
        done = self.inner.write_if(key, data, media_type, token)
        if done:
            self.written.add(key)
        return done


class Remember:
    """A run whose answer may be memoized: `begin` before the run, `end` after it."""

    def __init__(self, request: memos.Request, store: RecordingStore) -> None:
        self.request, self.store = request, store
        self.sources: dict[str, str] = {}
        self.local: LocalRun | None = None

    @classmethod
    def begin(cls, request: memos.Request, store: Store, args: Any, from_file: bool) -> Remember | None:
        """None unless the request is one the fast path answers (see the module's docstring);
        `from_file`: the Pipeline is in the request's file."""
        plain = not (args.no_cache or args.resume_from) and from_file
        if not plain or not isinstance(store, LocalStore) or store.root != request.store_uri:
            return None
        return cls(request, RecordingStore(store))

    def watch(self, local: LocalRun) -> Remember | None:
        """This run's spec, checked; its local sources' facts before it runs."""
        if local.timeout_seconds is not None or local.resume_from or local.store is not self.store:
            return None
        for stage in local.spec.stages:
            options = local.ctx.options[stage.name]
            if stage.uses is None or not stage.cache or options.get("promotion") == "Manual":
                return None
            source = options.get("source") if stage.uses == "ingest" else None
            if isinstance(source, str):
                parsed = urlparse(source)
                if parsed.scheme not in ("", "file", "sklearn"):
                    return None
                if parsed.scheme != "sklearn":
                    path = str(Path(parsed.path if parsed.scheme else source))
                    self.sources[path] = source_fact(Path(path))
        self.local = local
        return self

    def end(self, record: RunRecord, console: dict[str, Any] | None) -> None:
        """Write the memo, if the run ended fully cached and nothing it read has changed."""
        memo = self._memo(record)
        if memo is None:
            return
        key = keys.memo_key(self.request.digest)
        memo["consoles"] = _consoles(self.store.inner, key, memo)  # -o json keeps them too
        if console is not None:
            here = memos.console_key()
            memo["consoles"].pop(here, None)  # the newest last: the oldest is dropped first
            memo["consoles"][here] = console
        # keys in the record's own order (`-o json` prints it so), not sorted as records are
        self.store.inner.write_bytes(key, json.dumps(memo).encode(), "application/json")

    def _memo(self, record: RunRecord) -> dict[str, Any] | None:
        store, own = self.store, keys.run_prefix(record.namespace, record.pipeline, record.run) + "/"
        fully_cached = (
            record.phase == "Succeeded"
            and record.stages
            and all(s.cache_hit for s in record.stages)
            and record.start_time == record.completion_time
        )
        if not fully_cached or store.unsure or any(not k.startswith(own) for k in store.written):
            return None
        reads = {k: d for k, d in store.reads.items() if not k.startswith(own)}
        if any(store.digest_of(k) != d for k, d in reads.items()):
            return None  # changed since the run read it
        if any(source_fact(Path(p)) != fact for p, fact in self.sources.items()):
            return None
        commits = {
            s.name: {
                "metrics": store.inner.read_bytes(f"{own}{s.name}/{keys.METRICS}").decode(),
                "outputs": store.inner.read_bytes(f"{own}{s.name}/{keys.OUTPUTS}").decode(),
            }
            for s in record.stages
        }
        return {
            "format": memos.FORMAT,
            "request": self.request.digest,
            "conveyor": __version__,
            "code": memos.code_fingerprint(),
            "environment": memos.environment_fingerprint(),
            "sources": self.sources,
            "records": reads,
            "artifacts": [[k, size, sha] for k, (size, sha) in sorted(store.verified.items())],
            "commits": commits,
            "record": record.model_dump(mode="json", by_alias=True),
            "consoles": {},
        }


def _consoles(store: LocalStore, key: str, memo: dict[str, Any]) -> dict[str, Any]:
    """The summaries an earlier memo of this request kept for other terminal set-ups, if it
    gave the same answer (the same stage results and model)."""
    try:
        old = json.loads(store.read_bytes(key))
        same = _answer_of(old) == _answer_of(memo)
    except (StoreError, ValueError, KeyError, TypeError):
        return {}
    kept = list(old["consoles"].items())[-(MAX_CONSOLES - 1) :] if same else []
    return dict(kept)


def _answer_of(memo: dict[str, Any]) -> Any:
    record = {k: v for k, v in memo["record"].items() if k not in ("run", "startTime", "completionTime")}
    stages = [{k: v for k, v in s.items() if k not in ("startTime", "finishTime")} for s in record["stages"]]
    return [memo["commits"], {**record, "stages": stages}]


def summary(record: RunRecord, memoize: bool) -> tuple[str, dict[str, Any] | None]:
    """The summary as `print_summary` prints it on stdout, and (with `memoize`) the memo's
    entry for this terminal set-up: the same text with the run's name as placeholders, and
    whether stderr showed the live view (then nothing stays of it) or progress lines."""
    from rich.console import Console

    from conveyor.local.progress import print_summary

    console = Console()
    with console.capture() as printed:
        print_summary(console, record)
    text = printed.get()
    if not memoize:
        return text, None
    with console.capture() as blank:
        print_summary(console, record.model_copy(update={"run": memos.PLACEHOLDER * len(record.run)}))
    template = blank.get()
    if memos.fill(template, record.run) != text:
        return text, None
    return text, {"summary": template, "live": Console(stderr=True).is_terminal}
