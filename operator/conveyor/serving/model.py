"""The served model: found through the store's records, verified, loaded without pickle.

A model URI points into a run (`<store>/<ns>/<pipeline>/<run>/<stage>/model.skops`); the run's
`run.json` (or `outputs.json`, or the pipeline's `champion.json`) records its SHA-256, which is
checked before the file is loaded. The reference profile comes from the same run.

When the stage that wrote the model also stored `model.onnx` (the train stage does when the
ONNX graph predicts what the pipeline predicts, see `stages/export.py`), predictions come from
onnxruntime (`backend == "onnx"`): no Python from a file runs, and one row costs ~0.06 ms instead
of ~4 ms. Its SHA-256 is checked like the model's; a file that does not match is refused. The
features, numeric columns, input names and classes come from the ONNX output's recorded
metadata, so on this path neither the skops file nor scikit-learn, scipy or pandas is loaded
(start-up and memory are onnxruntime's). The skops model serves when there is no usable ONNX
file, or when asked for (`backend == "skops"`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.artifacts import layout, onnxfile
from conveyor.artifacts.layout import ArtifactPath
from conveyor.artifacts.models import DigestMismatch, load_model
from conveyor.artifacts.store import Store, StoreError, open_location, open_store, sha256_file
from conveyor.artifacts.uri import StoreURI
from conveyor.engine.invocation import ArtifactRef
from conveyor.errors import ConveyorError, UserError
from conveyor.serving.fastpath import row_values

log = logging.getLogger(__name__)
BACKENDS = ("auto", "onnx", "skops")


class ModelError(ConveyorError, RuntimeError):
    """The model cannot be served; the message says why and what to do."""


class BadInput(UserError):
    """A request the model cannot answer: 400, naming the field (a ValueError, as UserError is)."""


@dataclass
class Resolved:
    store: Store
    model: ArtifactRef
    profile: ArtifactRef | None
    name: str
    version: str
    onnx: ArtifactRef | None = None


def onnx_beside(store: Store, model: ArtifactRef) -> ArtifactRef | None:
    """The `model.onnx` the stage that wrote `model` stored with it, as its outputs.json records
    it (also when a later run reused that stage from the cache), or None."""
    try:
        prefix = store.key(model.uri).rpartition("/")[0]
    except StoreError:
        return None
    result = layout.read_result(store, prefix)
    if result is None:
        return None
    own = result.outputs.get("model")
    if own is None or (own.uri, own.sha256) != (model.uri, model.sha256):
        return None
    return result.outputs.get(onnxfile.OUTPUT_NAME)


def _locate(uri: str) -> tuple[Store, ArtifactPath]:
    """The store holding a run's artifact (a URI or a local path), and where in it."""
    try:
        where = ArtifactPath.locate(StoreURI.parse(uri))
    except StoreError:
        raise ModelError(
            f"{uri} is not a run's model (expected <store>/<ns>/<pipeline>/<run>/<stage>/"
            "model.skops); serve a run's model, or --pipeline NAME --store STORE"
        ) from None
    return open_location(where.root), where


def resolve_uri(uri: str, reference: str | None = None) -> Resolved:
    store, where = _locate(uri)
    key, run = where.key, where.run
    record = layout.read_run_record(store, run.namespace, run.pipeline, run.run)
    recorded: ArtifactRef | None = None
    profile: ArtifactRef | None = None
    if record is not None:
        for outputs in record.artifacts.values():
            for name, ref in outputs.items():
                if name == "model" and ref.uri == store.uri(key):
                    recorded = ref
                if name == "profile":
                    profile = ref
    if recorded is None:
        result = layout.read_result(store, run.stage(where.stage))
        recorded = result.outputs.get("model") if result else None
    if recorded is None:
        raise ModelError(
            f"no record of {uri}: its run's run.json and outputs.json do not list it, "
            "so its digest cannot be checked"
        )
    if reference:
        profile = _ref_for(reference)
    return Resolved(store, recorded, profile, run.pipeline, run.run, onnx_beside(store, recorded))


def resolve_champion(pipeline: str, store_uri: str, namespace: str = "default") -> Resolved:
    store = open_store(store_uri)
    champion = layout.read_champion(store, namespace, pipeline)
    if champion is None:
        raise ModelError(
            f"pipeline {pipeline!r} has no promoted model in {store_uri} "
            f"(namespace {namespace}); run it until a model passes its gate"
        )
    return Resolved(
        store, champion.model, champion.profile, pipeline, champion.run, onnx_beside(store, champion.model)
    )


def _ref_for(uri: str) -> ArtifactRef:
    if "://" not in uri:
        path = Path(uri)
        return ArtifactRef(uri=path.resolve().as_uri(), sha256=sha256_file(path), bytes=path.stat().st_size)
    store, where = _locate(uri)
    data = store.read_bytes(where.key)
    return ArtifactRef(uri=uri, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def _fetch(resolved: Resolved, ref: ArtifactRef, tmp: str) -> Path:
    try:
        return resolved.store.local_path(resolved.store.key(ref.uri), Path(tmp))
    except StoreError as err:
        raise ModelError(str(err)) from None


def _load_estimator(resolved: Resolved) -> Any:
    with tempfile.TemporaryDirectory(prefix="conveyor-serve-") as tmp:
        path = _fetch(resolved, resolved.model, tmp)
        try:
            return load_model(path, resolved.model.sha256)
        except DigestMismatch as err:
            raise _changed(resolved.model, err) from None
        except ValueError as err:
            raise ModelError(f"refusing to load {resolved.model.uri}: {err}") from None


def _changed(ref: ArtifactRef, err: DigestMismatch) -> ModelError:
    return ModelError(
        f"refusing to serve {ref.uri}: its SHA-256 is {err.actual}, "
        f"the run recorded {err.expected} (the file was changed)"
    )


def _load_session(
    resolved: Resolved, ref: ArtifactRef, features: list[str], numeric: set[str]
) -> tuple[Any, list[str]] | None:
    """The onnxruntime session for `ref` (the model's `model.onnx`) and its input names, or None
    (logged) when onnxruntime cannot run it or its inputs are not the recorded ones (one matrix
    of numeric features, or one per feature). A changed file is refused."""
    meta = ref.meta
    with tempfile.TemporaryDirectory(prefix="conveyor-serve-") as tmp:
        path = _fetch(resolved, ref, tmp)
        try:
            session = onnxfile.load_session(path, ref.sha256)
        except DigestMismatch as err:
            raise _changed(ref, err) from None
        except Exception as err:  # onnxruntime's own errors: serve the skops model instead
            log.warning("onnxruntime cannot load %s (%s); using skops", ref.uri, err)
            return None
    inputs = [i.name for i in session.get_inputs()]
    if inputs != meta.get("inputs") or not onnxfile.fits(inputs, features, numeric):
        log.warning("not serving %s: its inputs are not the recorded ones; using skops", ref.uri)
        return None
    return session, inputs


def listing(names: list[str], all_: bool = False, shown: int = 5, form: Any = repr) -> str:
    """`names` for an error message: all of them when `all_` (the model's own features, a
    bounded list), else the first `shown` and how many more (a client's names, unbounded)."""
    if all_ or len(names) <= shown:
        return ", ".join(map(form, names))
    return ", ".join(map(form, names[:shown])) + f" and {len(names) - shown} more"


def _read_profile(resolved: Resolved) -> dict[str, Any] | None:
    if resolved.profile is None:
        return None
    profile: dict[str, Any] = json.loads(resolved.store.read_bytes(resolved.store.key(resolved.profile.uri)))
    return profile


@dataclass
class ServedModel:
    name: str
    version: str
    estimator: Any  # the scikit-learn pipeline when backend == "skops", else None
    features: list[str]
    numeric: set[str]
    task: str
    profile: dict[str, Any] | None
    sha256: str
    classes: list[Any] = field(default_factory=list)
    session: Any = None  # an onnxruntime InferenceSession when backend == "onnx"
    inputs: list[str] = field(default_factory=list)  # the session's input names, in feature order
    labels: dict[Any, Any] = field(init=False, default_factory=dict)  # ONNX label -> class
    categorical: list[str] = field(init=False, default_factory=list)  # the features not numeric

    def __post_init__(self) -> None:
        self.labels = {_plain(c): _plain(c) for c in self.classes}
        self.categorical = [f for f in self.features if f not in self.numeric]

    @property
    def backend(self) -> str:
        """What computes the predictions: "onnx" (onnxruntime) or "skops" (scikit-learn)."""
        return "skops" if self.session is None else "onnx"

    @classmethod
    def load(cls, resolved: Resolved, backend: str = "auto") -> ServedModel:
        """The model, served by onnxruntime when `backend` is "auto" or "onnx" and a usable
        `model.onnx` was recorded with it, else by scikit-learn from the skops file ("auto",
        "skops"). "onnx" without a usable ONNX file is a ModelError."""
        if backend not in BACKENDS:
            raise ModelError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        profile = _read_profile(resolved)
        if backend != "skops":
            served = cls._load_onnx(resolved, profile)
            if served is not None:
                return served
            if backend == "onnx":
                raise ModelError(
                    f"{resolved.model.uri} has no usable model.onnx (the train stage stores one only "
                    "when the ONNX graph predicts what the pipeline does; its log says why not): "
                    "serve it with --backend auto or skops"
                )
        return cls._load_skops(resolved, profile)

    @classmethod
    def _load_onnx(cls, resolved: Resolved, profile: dict[str, Any] | None) -> ServedModel | None:
        """Everything from the ONNX output and its recorded metadata: no skops, no scikit-learn."""
        if resolved.onnx is None:
            return None
        meta = resolved.onnx.meta
        features, numeric, classes = meta.get("features"), meta.get("numeric"), meta.get("classes")
        if not (isinstance(features, list) and isinstance(numeric, list) and isinstance(classes, list)):
            return None
        features = [str(f) for f in features]
        onnx = _load_session(resolved, resolved.onnx, features, set(numeric))
        if onnx is None:
            return None
        task = (profile or {}).get("task") or ("classification" if classes else "regression")
        return cls(
            resolved.name,
            resolved.version,
            None,
            features,
            set(numeric),
            task,
            profile,
            resolved.model.sha256,
            classes,
            *onnx,
        )

    @classmethod
    def _load_skops(cls, resolved: Resolved, profile: dict[str, Any] | None) -> ServedModel:
        estimator = _load_estimator(resolved)
        names = getattr(estimator, "feature_names_in_", None)
        features = (
            [str(n) for n in names] if names is not None else list((profile or {}).get("featureNames", []))
        )
        numeric = {
            f
            for f in features
            if (profile or {}).get("features", {}).get(f, {}).get("kind", "numeric") == "numeric"
        }
        task = (profile or {}).get("task") or (
            "classification" if hasattr(estimator, "classes_") else "regression"
        )
        classes = list(getattr(estimator, "classes_", []))
        return cls(
            resolved.name,
            resolved.version,
            estimator,
            features,
            numeric,
            task,
            profile,
            resolved.model.sha256,
            classes,
        )

    def validate(self, rows: list[dict[str, Any]]) -> None:
        """Raise BadInput, naming the field, unless every row can be predicted."""
        known = set(self.features)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadInput(f"instances[{i}] must be an object of feature -> value")
            missing = [f for f in self.features if f not in row]
            if missing:
                raise BadInput(
                    f"instances[{i}] is missing feature(s): {listing(missing, all_=True, form=str)}"
                )
            unknown = [k for k in row if k not in known]
            if unknown:
                raise BadInput(f"instances[{i}] has unknown feature(s): {listing(unknown, form=str)}")
            for f in self.numeric:
                v = row[f]
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise BadInput(f"instances[{i}].{f} must be a number, got {type(v).__name__}")
            for f in self.categorical:
                if row[f] == onnxfile.MISSING:  # what the ONNX graph reads as missing: ambiguous
                    raise BadInput(
                        f"instances[{i}].{f} is the NUL character, which is not a category; "
                        "send null for a missing value"
                    )

    def frame(self, rows: list[dict[str, Any]]) -> Any:
        """Validated rows -> the DataFrame the pipeline was trained on (pandas is imported only
        by the skops backend)."""
        import pandas as pd

        df = pd.DataFrame.from_records(rows, columns=self.features)
        for f in self.features:
            if f not in self.numeric:
                df[f] = df[f].astype(object).where(df[f].notna(), np.nan)
        return df

    def predict(self, rows: list[dict[str, Any]]) -> list[Any]:
        """Predictions for validated rows (runs in the worker thread, frame included)."""
        if self.session is not None:
            return self._predict_onnx(rows)
        out = self.estimator.predict(self.frame(rows))
        return [v.item() if hasattr(v, "item") else v for v in out]

    def _predict_onnx(self, rows: list[dict[str, Any]]) -> list[Any]:
        """The first output of the ONNX graph: labels (classifiers, mapped back to the classes
        the pipeline has) or values (regressors), as plain Python values."""
        feeds = (
            _numeric_feeds(self.inputs, self.features, rows)
            if self.numeric.issuperset(self.features)
            else onnxfile.feeds(self.inputs, self.features, self.numeric, rows)
        )  # the same arrays as `onnxfile.feeds`, built cheaper (tests/unit/serving/test_model.py)
        first = self.session.get_outputs()[0].name
        out = [_plain(v) for v in self.session.run([first], feeds)[0].ravel()]
        return [self.labels.get(v, v) for v in out] if self.labels else out


def _numeric_feeds(inputs: list[str], features: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What `onnxfile.feeds` makes of validated rows when every feature is numeric (NaN for
    None): the [n, features] float32 matrix, or its columns as [n, 1] inputs (a third of the
    cost of building each column alone)."""
    table = np.array(row_values(rows, features), dtype=np.float32).reshape(len(rows), len(features))
    if onnxfile.is_matrix(inputs, features):
        return {onnxfile.MATRIX: table.reshape(-1, len(features))}
    return {name: table[:, i : i + 1] for i, name in enumerate(inputs)}


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
