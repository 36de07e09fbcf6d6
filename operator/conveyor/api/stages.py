"""Options of the built-in stages (the `with:` block), the typed contract of each built-in."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from conveyor.api.common import Model

# Estimators are named by dotted path; only these scikit-learn families may be loaded.
ALLOWED_ESTIMATOR_MODULES = (
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.tree",
    "sklearn.svm",
    "sklearn.neighbors",
    "sklearn.naive_bayes",
    "sklearn.discriminant_analysis",
    "sklearn.neural_network",
    "sklearn.dummy",
)

Scalar = str | int | float | bool


class IngestOptions(Model):
    source: str = Field(
        description="sklearn://<dataset> (a bundled load_* dataset), a CSV/Parquet path, or s3://."
    )
    target: str | None = Field(default=None, description="Target column; `target` for sklearn://.")
    drop_missing_target: bool = True
    columns: list[str] | None = Field(default=None, description="Keep only these columns.")


class ColumnExpectation(Model):
    dtype: Literal["numeric", "integer", "float", "string", "bool"] | None = None
    required: bool = True
    max_null_fraction: float | None = Field(default=None, ge=0, le=1)
    min: float | None = None
    max: float | None = None
    allowed: list[Scalar] | None = Field(default=None, description="Allowed categories.")


class Expectations(Model):
    min_rows: int | None = Field(default=None, ge=0)
    columns: dict[str, ColumnExpectation] = Field(default_factory=dict)


class ValidateOptions(Model):
    expectations: Expectations | None = Field(
        default=None, description="When absent, inferred from the first run and then enforced."
    )
    infer: bool = True


class NumericPrep(Model):
    impute: Literal["mean", "median", "most_frequent"] = "median"
    scale: Literal["standard", "minmax", "robust", "none"] = "standard"


class CategoricalPrep(Model):
    impute: Literal["most_frequent", "constant"] = "most_frequent"
    encode: Literal["onehot", "ordinal"] = "onehot"


class TransformOptions(Model):
    test_size: float = Field(default=0.2, gt=0, lt=1)
    stratify: bool | None = Field(default=None, description="Default: yes for classification.")
    random_state: int = 42
    drop: list[str] = Field(default_factory=list, description="Columns not used as features.")
    numeric: NumericPrep = Field(default_factory=NumericPrep)
    categorical: CategoricalPrep = Field(default_factory=CategoricalPrep)
    task: Literal["auto", "classification", "regression"] = "auto"


class SearchOptions(Model):
    type: Literal["grid", "random"] = "grid"
    space: dict[str, list[Any]] = Field(description="Estimator parameter -> values to try.")
    cv: int = Field(default=5, ge=2, le=20)
    n_iter: int = Field(default=10, ge=1)
    scoring: str | None = None
    n_jobs: int = Field(default=1, ge=-1)
    random_state: int = 42


class TrainOptions(Model):
    estimator: str = Field(description="Dotted path, e.g. sklearn.linear_model.LogisticRegression.")
    params: dict[str, Any] = Field(default_factory=dict)
    task: Literal["auto", "classification", "regression"] = "auto"
    search: SearchOptions | None = None

    @field_validator("estimator")
    @classmethod
    def _allowed(cls, value: str) -> str:
        module, _, name = value.rpartition(".")
        if module not in ALLOWED_ESTIMATOR_MODULES or not name:
            raise ValueError(
                f"estimator {value!r} is outside the allowed scikit-learn families; use a "
                "class from " + ", ".join(ALLOWED_ESTIMATOR_MODULES)
            )
        return value


class Gate(Model):
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs `min` or `max`")
        return self


class EvaluateOptions(Model):
    gate: Gate | None = None
    compare_to: Literal["champion"] | None = None
    min_improvement: float = 0.0
    promote: bool = True
    profile_bins: int = Field(default=10, ge=2, le=100)


BUILTIN_OPTIONS: dict[str, type[Model]] = {
    "ingest": IngestOptions,
    "validate": ValidateOptions,
    "transform": TransformOptions,
    "train": TrainOptions,
    "evaluate": EvaluateOptions,
}

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("rmse", "mae", "r2")
