"""`conveyor render`: the Jobs the operator would create for a run, every dependency assumed
done. Pure: no API server, no store; inputs and cache keys are filled in at run time."""

from __future__ import annotations

from typing import Any

from conveyor.api.pipeline import Pipeline
from conveyor.api.pipelinerun import PipelineRun
from conveyor.artifacts.layout import RunPath
from conveyor.artifacts.uri import StoreURI
from conveyor.engine.invocation import StageInvocation
from conveyor.engine.validation import resolve_options, resolve_params
from conveyor.kube.manifests import Owner, desired_job
from conveyor.kube.settings import Settings
from conveyor.kube.stores import StoreResolver

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def render_jobs(pipeline: Pipeline, run: PipelineRun | None, settings: Settings) -> list[dict[str, Any]]:
    namespace = (run.metadata.namespace if run else None) or pipeline.metadata.namespace or "default"
    run_name = run.metadata.name if run and run.metadata.name else f"{pipeline.metadata.name}-run"
    params = resolve_params(pipeline.spec, run.spec.params if run else {})
    options = resolve_options(pipeline.spec, params)
    s3 = StoreResolver(settings).spec_for(pipeline.spec)
    root = StoreURI.s3(s3.bucket, s3.prefix)
    where = RunPath(namespace, pipeline.metadata.name, run_name)
    owner = Owner(
        "PipelineRun", run_name, run.metadata.uid if run and run.metadata.uid else PLACEHOLDER_UID, namespace
    )
    jobs = []
    for stage in pipeline.spec.stages:
        inv = StageInvocation(
            namespace=namespace,
            pipeline=pipeline.metadata.name,
            run=run_name,
            stage=stage.name,
            uses=stage.uses,
            options=options[stage.name],
            params=params,
            inputs={dep: {} for dep in stage.depends_on},
            store=root.uri,
            output_prefix=root.join(where.stage(stage.name)).uri,
            cache_key="computed-at-run-time",
        )
        jobs.append(desired_job(owner, pipeline.metadata.name, stage, inv, s3, settings))
    return jobs
