"""Imported once by the local executor's fork server, so forked stages start warm."""

import pandas  # noqa: F401
import pyarrow.parquet  # noqa: F401
import sklearn.compose
import sklearn.datasets
import sklearn.ensemble
import sklearn.impute
import sklearn.linear_model
import sklearn.metrics
import sklearn.model_selection
import sklearn.pipeline
import sklearn.preprocessing  # noqa: F401
import skops.io  # noqa: F401

import conveyor.stages.evaluate
import conveyor.stages.ingest
import conveyor.stages.train
import conveyor.stages.transform
import conveyor.stages.validate  # noqa: F401
