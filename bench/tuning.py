"""Bayesian (Optuna TPE) against random search, as the train stage runs them.

For each dataset the real stages run once (ingest, transform), then the train stage twice per
seed with the same estimator, search space, number of candidates and CV folds: once with
`search: {type: random, nIter: N, randomState: seed}`, once with `{type: bayes, nTrials: N,
seed: seed}`. The figure is each search's best CV score (the stage's `cv_best_score`), their
ratio bayes / random, and the wall time of each search.

    breast_cancer  SVC, C and gamma on log ranges          (accuracy, 5-fold stratified)
    diabetes       GradientBoostingRegressor, 4 parameters  (r2, 5-fold)

Usage: python bench/tuning.py [--trials N] [--seeds S] [--cv K]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from conveyor.artifacts.store import LocalStore
from conveyor.engine.invocation import ArtifactRef, StageInvocation
from conveyor.stages.runner import execute

DATASETS: dict[str, dict[str, Any]] = {
    "breast_cancer": {
        "estimator": "sklearn.svm.SVC",
        "params": {},
        "scoring": "accuracy",
        "space": {
            "C": {"low": 1e-3, "high": 1e3, "log": True},
            "gamma": {"low": 1e-5, "high": 10, "log": True},
        },
    },
    "diabetes": {
        "estimator": "sklearn.ensemble.GradientBoostingRegressor",
        "params": {"random_state": 0},
        "scoring": "r2",
        "space": {
            "learning_rate": {"low": 0.005, "high": 0.5, "log": True},
            "max_depth": {"low": 1, "high": 6, "type": "int"},
            "n_estimators": {"low": 20, "high": 300, "type": "int"},
            "subsample": {"low": 0.4, "high": 1.0},
        },
    },
}


class Bench:
    def __init__(self, root: Path, dataset: str) -> None:
        self.store = LocalStore(root / dataset)
        self.outputs: dict[str, dict[str, ArtifactRef]] = {}
        self.runs = 0
        self.stage("ingest", {"source": f"sklearn://{dataset}"}, [])
        self.stage("transform", {"randomState": 7}, ["ingest"])

    def stage(self, name: str, options: dict[str, Any], deps: list[str]) -> dict[str, float]:
        self.runs += 1
        inv = StageInvocation(
            namespace="bench",
            pipeline="tuning",
            run=f"r{self.runs}",
            stage=name,
            uses=name,
            options=options,
            inputs={d: self.outputs[d] for d in deps},
            store=self.store.root,
            output_prefix=self.store.uri(f"bench/tuning/r{self.runs}/{name}"),
        )
        result = execute(inv)
        self.outputs[name] = result.outputs
        return result.metrics

    def search(self, config: dict[str, Any], search: dict[str, Any], cv: int) -> tuple[float, float]:
        options = {
            "estimator": config["estimator"],
            "params": config["params"],
            "search": {"cv": cv, "scoring": config["scoring"], "space": config["space"], **search},
        }
        start = time.perf_counter()
        metrics = self.stage("train", options, ["transform"])
        return metrics["cv_best_score"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="candidates per search (default 30)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 (default 3)")
    parser.add_argument("--cv", type=int, default=5, help="CV folds (default 5)")
    args = parser.parse_args()
    print(f"{args.trials} candidates per search, {args.cv}-fold CV, seeds 0..{args.seeds - 1}")
    header = ("dataset", "seed", "random", "bayes", "bayes/random", "t random", "t bayes")
    print("{:<14} {:>4} {:>8} {:>8} {:>12} {:>9} {:>8}".format(*header))
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-tuning-") as tmp:
        for dataset, config in DATASETS.items():
            bench = Bench(Path(tmp), dataset)
            ratios = []
            for seed in range(args.seeds):
                random, t_random = bench.search(
                    config, {"type": "random", "nIter": args.trials, "randomState": seed}, args.cv
                )
                bayes, t_bayes = bench.search(
                    config, {"type": "bayes", "nTrials": args.trials, "seed": seed}, args.cv
                )
                ratios.append(bayes / random)
                print(
                    f"{dataset:<14} {seed:>4} {random:>8.4f} {bayes:>8.4f} {bayes / random:>12.4f} "
                    f"{t_random:>8.1f}s {t_bayes:>7.1f}s"
                )
            print(
                f"{dataset:<14} mean ratio bayes/random {statistics.mean(ratios):.4f}, min {min(ratios):.4f}"
            )


if __name__ == "__main__":
    main()
