"""What a running stage sees: its invocation, its inputs as local files, a place to write."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from conveyor.artifacts import champion as champions
from conveyor.artifacts.champion import ChampionState
from conveyor.artifacts.layout import Champion, StageResult
from conveyor.artifacts.store import Store, open_store
from conveyor.engine.invocation import ArtifactRef, StageInvocation
from conveyor.errors import ConveyorError


class StageError(ConveyorError, RuntimeError):
    """An expected failure: its message goes to the run's status as is."""


class StageContext:
    def __init__(self, invocation: StageInvocation, store: Store | None = None) -> None:
        self.inv = invocation
        self.options = invocation.options
        self.store = store or open_store(invocation.store)
        self.prefix = self.store.key(invocation.output_prefix)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"conveyor-{invocation.stage}-")
        self.workdir = Path(self._tmp.name)
        self.result = StageResult(cache_key=invocation.cache_key)

    def close(self) -> None:
        self._tmp.cleanup()

    # inputs -------------------------------------------------------------------------------
    def input_ref(self, name: str) -> ArtifactRef:
        try:
            return self.inv.find_input(name)
        except LookupError as err:
            raise StageError(str(err)) from None

    def input_path(self, name: str) -> Path:
        ref = self.input_ref(name)
        path = self.store.local_path(self.store.key(ref.uri), self.workdir / "in")
        return path

    def input_json(self, name: str) -> Any:
        return json.loads(self.store.read_bytes(self.store.key(self.input_ref(name).uri)))

    # outputs ------------------------------------------------------------------------------
    def out_path(self, filename: str) -> Path:
        path = self.workdir / "out" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, name: str, path: Path, media_type: str, **meta: Any) -> ArtifactRef:
        ref = self.store.write_file(f"{self.prefix}/{path.name}", path, media_type)
        ref = ref.model_copy(update={"meta": meta})
        self.result.outputs[name] = ref
        return ref

    def write_json(self, name: str, value: Any, filename: str | None = None) -> ArtifactRef:
        path = self.out_path(filename or f"{name}.json")
        path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
        return self.write(name, path, "application/json")

    def passthrough(self, name: str) -> ArtifactRef:
        """Hand an input on to downstream stages without copying it."""
        ref = self.input_ref(name)
        self.result.outputs[name] = ref
        return ref

    def metric(self, name: str, value: float) -> None:
        self.result.metrics[name] = float(value)

    # pipeline-level records -------------------------------------------------------------------
    def pipeline_key(self, name: str) -> str:
        return f"{self.inv.namespace}/{self.inv.pipeline}/{name}"

    def champion(self) -> ChampionState:
        """The pipeline's champion as it is now, with the token `promote` must still find."""
        return champions.current(self.store, self.inv.namespace, self.inv.pipeline)

    def promote(self, state: ChampionState, champion: Champion) -> bool:
        """Make `champion` the champion if the champion is still `state`'s (compare and swap);
        False when another run promoted meanwhile: read it again and decide again."""
        return champions.promote(self.store, self.inv.namespace, self.inv.pipeline, state, champion)
