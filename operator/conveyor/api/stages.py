"""Options of the built-in stages (the `with:` block), the typed contract of each built-in."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from conveyor.api.common import Dns1123Label, Model, exactly_one

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
    target: str | None = Field(
        default=None,
        description="The label column, when the stage producing the data does not name it "
        "(a custom stage that writes no `meta.target`); the data's own target wins otherwise.",
    )


class ParamRange(Model):
    """A range of one estimator parameter, sampled by random and bayes search (grid takes lists)."""

    low: float
    high: float
    log: bool = Field(default=False, description="Sample on a log scale (needs low > 0).")
    type: Literal["float", "int"] = Field(default="float", description="int: whole numbers only.")

    @model_validator(mode="after")
    def _ordered(self) -> ParamRange:
        if self.low >= self.high:
            raise ValueError(f"a range needs low < high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got low={self.low}")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError("an int range needs whole-number low and high")
        return self


class SearchOptions(Model):
    type: Literal["grid", "random", "bayes"] = Field(
        default="grid",
        description="grid: every combination; random: nIter samples (randomState); "
        "bayes: nTrials of Optuna's TPE sampler (seed), each trial chosen from the scores so far.",
    )
    space: dict[str, list[Any] | ParamRange] = Field(
        description="Estimator parameter -> a list of values (grid tries each; random and bayes choose "
        "among them) or a range {low, high, log, type: float|int} that random and bayes sample."
    )
    cv: int = Field(default=5, ge=2, le=20)
    n_iter: int = Field(default=10, ge=1, description="random: candidates sampled.")
    scoring: str | None = None
    n_jobs: int = Field(default=1, ge=-1)
    random_state: int = 42
    n_trials: int = Field(default=20, ge=1, le=10000, description="bayes: trials (each one CV fit).")
    seed: int | None = Field(
        default=None,
        description="bayes: the sampler's seed (default randomState); the same seed, data and a "
        "deterministic estimator give the same trials and best params.",
    )

    @model_validator(mode="after")
    def _fits_type(self) -> SearchOptions:
        for name, values in self.space.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"space.{name} is empty: give at least one value")
            if not isinstance(values, ParamRange) or self.type == "bayes":
                continue
            if self.type == "grid":
                raise ValueError(
                    f"space.{name}: grid search takes a list of values; "
                    "sample a range with type: random or bayes"
                )
            if values.log and values.type == "int":
                raise ValueError(f"space.{name}: random search samples log ranges of floats only; use bayes")
        if self.type != "bayes" and {"n_trials", "seed"} & self.model_fields_set:
            raise ValueError(
                f"nTrials and seed are options of type: bayes; {self.type} search takes nIter and randomState"
            )
        return self


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


class ModelChoice(Model):
    """Which model a predict stage scores with: a pipeline's champion, or a pinned model URI."""

    from_pipeline: Dns1123Label | None = Field(
        default=None,
        description="Score with this pipeline's champion (its promoted model, in the same namespace "
        "and artifact store), read when the stage starts.",
    )
    version: int | None = Field(
        default=None, ge=1, description="With fromPipeline: this promoted version, not the champion."
    )
    uri: str | None = Field(
        default=None,
        description="Score with this model (<store>/<ns>/<pipeline>/<run>/<stage>/model.skops, inside "
        "this pipeline's artifact store); its SHA-256 comes from its run's records.",
    )

    @model_validator(mode="after")
    def _one(self) -> ModelChoice:
        exactly_one(self, "from_pipeline", "uri", "set exactly one of model.fromPipeline or model.uri")
        if self.version is not None and self.from_pipeline is None:
            raise ValueError("model.version pins a version of model.fromPipeline; set fromPipeline")
        return self


class PredictOptions(Model):
    model: ModelChoice
    input: str = Field(default="data", description="The upstream output to score (ingest writes `data`).")
    keep: list[str] | None = Field(
        default=None,
        description="Input columns copied next to the predictions (e.g. an id); default: all of them.",
    )
    prediction_column: str = Field(default="prediction", min_length=1)
    probabilities: bool = Field(
        default=True, description="For a classifier, a column `<probabilityPrefix><class>` per class."
    )
    probability_prefix: str = Field(default="proba_", min_length=1)
    drift_method: Literal["psi", "ks", "chi2"] = Field(
        default="psi",
        description="The statistic of `drift_score` (the largest over the features) against the model's "
        "reference profile; ks for numeric and chi2 for categorical features, psi for the others.",
    )
    drift_threshold: float = Field(
        default=0.25,
        ge=0,
        description="The metric `drifted_features` counts the features above it (PSI > 0.25: shifted).",
    )


class Gate(Model):
    """One condition of a gate: a metric the evaluate stage measures, and its bound(s)."""

    metric: str = Field(
        description="accuracy, precision, recall, f1, roc_auc (classification); rmse, mae, r2."
    )
    min: float | None = None
    max: float | None = None

    @field_validator("metric")
    @classmethod
    def _measured(cls, value: str) -> str:
        known = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
        if value not in known:
            raise ValueError(
                f"the evaluate stage measures no metric {value!r}; use one of " + ", ".join(known)
            )
        return value

    @model_validator(mode="after")
    def _bound(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs `min` or `max`")
        return self


class EvaluateOptions(Model):
    gate: list[Gate] | None = Field(
        default=None,
        description="One condition {metric, min|max}, or a list of them that must all hold. With "
        "compareTo: champion, the model must also beat the champion on the first condition's metric.",
    )
    compare_to: Literal["champion"] | None = None
    min_improvement: float = 0.0
    promote: bool = True
    promotion: Literal["Auto", "Manual"] = Field(
        default="Auto",
        description="Auto: a model that passes is promoted at once. Manual: it waits for a human "
        "(`conveyor approve RUN`, or the PipelineRun's spec.approval) and the run shows AwaitingApproval.",
    )
    profile_bins: int = Field(default=10, ge=2, le=100)

    # metrics where a smaller value is the better model
    LOWER_IS_BETTER: ClassVar[frozenset[str]] = frozenset({"rmse", "mae"})

    def beats(self, metric: str, new: float, old: float) -> bool:
        """Whether `new` beats `old` on `metric` by this stage's minImprovement (pure, so the
        operator can compare recorded metrics when a human approves, without loading a model)."""
        margin = self.min_improvement
        return new <= old - margin if metric in self.LOWER_IS_BETTER else new >= old + margin

    @field_validator("gate", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        """The single form `gate: {metric, min}` is a list of one condition."""
        if isinstance(value, dict | Gate):
            return [value]
        if isinstance(value, list) and not value:
            raise ValueError("a gate needs at least one condition; remove `gate` to promote without one")
        return value

    @property
    def gates(self) -> list[Gate]:
        return list(self.gate or [])


BUILTIN_OPTIONS: dict[str, type[Model]] = {
    "ingest": IngestOptions,
    "validate": ValidateOptions,
    "transform": TransformOptions,
    "train": TrainOptions,
    "evaluate": EvaluateOptions,
    "predict": PredictOptions,
}

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("rmse", "mae", "r2")
