"""The exact types a model file written by the built-in stages may hold, beyond skops' defaults.

skops itself trusts plain containers and scalars, scikit-learn's public estimator classes, numpy
and scipy ufuncs, numpy dtypes and bit generators; everything else in a file is listed by
`skops.io.get_untrusted_types`. This is the union of those lists over the models the `transform`
and `train` stages can write: every estimator class of `api.stages.ALLOWED_ESTIMATOR_MODULES` that
the train stage can fit and score, with the parameters that change what a fitted model holds
(losses, solvers, Tweedie links, neighbour algorithms and metrics), behind each preprocessing the
transform stage builds. `tests/unit/artifacts/test_models.py` regenerates it from such fitted
examples and fails when a type is missing here, or when a name here is not a class.

Exact qualified class names only: never a module prefix, never a function. Note that
`TreePredictor` (HistGradientBoosting*) indexes its node arrays without bounds checks, which is
why skops does not trust it by default; the SHA-256 recorded by the run is what vouches for a file.
"""

from __future__ import annotations

TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "numpy.dtype",
        "sklearn._loss.loss.HalfTweedieLoss",
        "sklearn._loss.loss.HalfTweedieLossIdentity",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.metrics._dist_metrics.BrayCurtisDistance64",
        "sklearn.metrics._dist_metrics.CanberraDistance64",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.DiceDistance64",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.HammingDistance64",
        "sklearn.metrics._dist_metrics.HaversineDistance64",
        "sklearn.metrics._dist_metrics.JaccardDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.metrics._dist_metrics.RogersTanimotoDistance64",
        "sklearn.metrics._dist_metrics.RussellRaoDistance64",
        "sklearn.metrics._dist_metrics.SEuclideanDistance64",
        "sklearn.metrics._dist_metrics.SokalMichenerDistance64",
        "sklearn.metrics._dist_metrics.SokalSneathDistance64",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.tree._tree.Tree",
    }
)
