"""Hyperparameter search for the train stage: grid, random (scikit-learn) and bayes (Optuna).

Every kind is recorded the same way: the metrics `cv_best_score` and `candidates`, and the
output `search` (train/search.json) with the best params and their CV score. Bayes search runs
`nTrials` trials of Optuna's TPE sampler seeded with `seed`; each trial scores one candidate
with the same cross-validation a GridSearchCV would use (`cv` folds, stratified for a
classifier, `scoring`), and the best one is refit on the whole training set. Optuna is imported
only when a bayes search runs.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor.api.stages import ParamRange, SearchOptions
from conveyor.stages.context import StageContext, StageError

PREFIX = "model__"  # the estimator's step in the training Pipeline
SCALARS = (str, int, float, bool, type(None))


def run_search(ctx: StageContext, model: Any, s: SearchOptions, x: Any, y: Any) -> Any:
    """The best pipeline of a CV search over the estimator's parameters, recorded in `ctx`."""
    if s.type == "bayes":
        best, score, candidates = bayes_search(model, s, x, y)
    else:
        best, score, candidates, model = _sklearn_search(model, s, x, y)
    ctx.metric("cv_best_score", score)
    ctx.metric("candidates", candidates)
    record: dict[str, Any] = {"best_params": best, "best_score": score, "type": s.type}
    if s.type == "bayes":
        record.update(n_trials=s.n_trials, seed=bayes_seed(s))
    ctx.write_json("search", record)
    return model


def _sklearn_search(model: Any, s: SearchOptions, x: Any, y: Any) -> tuple[dict[str, Any], float, int, Any]:
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    space = {PREFIX + k: _distribution(v) for k, v in s.space.items()}
    common: dict[str, Any] = {"cv": s.cv, "scoring": s.scoring, "n_jobs": s.n_jobs, "refit": True}
    search = (
        GridSearchCV(model, space, **common)
        if s.type == "grid"
        else RandomizedSearchCV(model, space, n_iter=s.n_iter, random_state=s.random_state, **common)
    )
    try:
        search.fit(x, y)
    except ValueError as err:
        raise StageError(f"search failed: {err}") from None
    best = {k.removeprefix(PREFIX): v for k, v in search.best_params_.items()}
    return best, float(search.best_score_), len(search.cv_results_["params"]), search.best_estimator_


def _distribution(values: list[Any] | ParamRange) -> Any:
    """A list as it is; a range as the scipy distribution RandomizedSearchCV samples."""
    if isinstance(values, list):
        return values
    from scipy import stats

    if values.type == "int":  # log int ranges are refused by SearchOptions for random search
        return stats.randint(int(values.low), int(values.high) + 1)
    if values.log:
        return stats.loguniform(values.low, values.high)
    return stats.uniform(values.low, values.high - values.low)


def bayes_seed(s: SearchOptions) -> int:
    return s.random_state if s.seed is None else s.seed


def startup_trials(n_trials: int) -> int:
    """Random trials before TPE models the scores: Optuna's 10 leaves only 20 of 30 trials
    guided; a sixth of the budget (at least 3, at most 10) gave TPE's best at least random
    search's on both benchmark datasets (bench/RESULTS.md, Tuning)."""
    return max(3, min(10, n_trials // 6))


def bayes_search(model: Any, s: SearchOptions, x: Any, y: Any) -> tuple[dict[str, Any], float, int]:
    """Optuna TPE over `s.space`; the best params (refit into `model`), their CV score, trials run."""
    import optuna
    from sklearn.model_selection import cross_val_score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    failures: list[str] = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, s.space)
        candidate = _with_params(model, params)
        try:
            scores = cross_val_score(
                candidate, x, y, cv=s.cv, scoring=s.scoring, n_jobs=s.n_jobs, error_score="raise"
            )
        except ValueError as err:
            failures.append(str(err))
            raise
        return float(scores.mean())

    sampler = optuna.samplers.TPESampler(seed=bayes_seed(s), n_startup_trials=startup_trials(s.n_trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=s.n_trials, catch=(ValueError,))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise StageError(f"search failed: all {s.n_trials} trials failed; the last: {failures[-1]}")
    best = decode(study.best_trial.params, s.space)
    try:
        model.set_params(**{PREFIX + k: v for k, v in best.items()}).fit(x, y)
    except ValueError as err:
        raise StageError(f"training with the best params {best} failed: {err}") from None
    return best, float(study.best_value), len(study.trials)


def suggest(trial: Any, space: dict[str, list[Any] | ParamRange]) -> dict[str, Any]:
    """One candidate: a choice from each list, a sample from each range."""
    params: dict[str, Any] = {}
    for name, values in space.items():
        if isinstance(values, ParamRange):
            if values.type == "int":
                params[name] = trial.suggest_int(name, int(values.low), int(values.high), log=values.log)
            else:
                params[name] = trial.suggest_float(name, values.low, values.high, log=values.log)
        else:
            params[name] = trial.suggest_categorical(name, choices(values))
    return decode(params, space)


def choices(values: list[Any]) -> list[Any]:
    """Optuna's categorical choices: the values when all are scalars, else their JSON text."""
    if all(isinstance(v, SCALARS) for v in values):
        return values
    return [json.dumps(v, sort_keys=True) for v in values]


def decode(params: dict[str, Any], space: dict[str, list[Any] | ParamRange]) -> dict[str, Any]:
    """Optuna's params -> estimator params (JSON-text choices back to their values)."""
    out = dict(params)
    for name, values in space.items():
        if isinstance(values, list) and name in out and choices(values) is not values:
            out[name] = values[choices(values).index(out[name])]
    return out


def _with_params(model: Any, params: dict[str, Any]) -> Any:
    from sklearn.base import clone

    try:
        return clone(model).set_params(**{PREFIX + k: v for k, v in params.items()})
    except ValueError as err:  # an unknown parameter: every trial would fail the same way
        raise StageError(f"search space: {err}") from None
