"""Pydantic models of the three resources: the single source of truth for the CRDs.

Import the submodule you need (`conveyor.api.pipelinerun`, ...): this package imports none of
them itself, so that reading one record (the model server does, at start-up) does not build the
schemas of all three resources.
"""
