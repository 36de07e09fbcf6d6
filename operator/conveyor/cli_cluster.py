"""`conveyor render | serve | operator`: the commands for a cluster and for serving."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from conveyor.cli_errors import CliError


def cmd_render(args: argparse.Namespace) -> int:
    import yaml

    from conveyor.api.pipeline import Pipeline
    from conveyor.api.pipelinerun import PipelineRun
    from conveyor.engine.validation import InvalidResource
    from conveyor.kube.render import render_jobs
    from conveyor.kube.settings import Settings
    from conveyor.resources import load_documents, validate_files

    paths = [Path(f) for f in args.file]
    problems = validate_files(paths)
    if problems:
        raise CliError("invalid resource:\n" + "\n".join(f"  {w}: {p}" for w, p in problems))
    docs = [d.body for p in paths for d in load_documents(p)]
    pipelines = [Pipeline.model_validate(d) for d in docs if d.get("kind") == "Pipeline"]
    runs = [PipelineRun.model_validate(d) for d in docs if d.get("kind") == "PipelineRun"]
    run = runs[0] if runs else None
    if run is not None and run.spec.pipeline_spec is not None:
        pipeline = Pipeline(metadata=run.metadata, spec=run.spec.pipeline_spec)
    else:
        wanted = run.spec.pipeline_ref.name if run and run.spec.pipeline_ref else None
        found = [p for p in pipelines if wanted is None or p.metadata.name == wanted]
        if not found:
            raise CliError(f"no Pipeline {wanted or ''} among the files: pass it with -f")
        pipeline = found[0]
    settings = Settings.from_env()
    if args.image:
        settings.image = args.image
    if args.store:
        settings.store = args.store
    try:
        jobs = render_jobs(pipeline, run, settings)
    except InvalidResource as err:
        raise CliError("\n".join(map(str, err.problems))) from None
    print(yaml.safe_dump_all(jobs, sort_keys=False, width=110), end="")
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    import kopf
    import prometheus_client

    import conveyor.kube.handlers  # noqa: F401  (registers the handlers)
    from conveyor.kube.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as err:
        raise CliError(str(err)) from None
    namespaces = args.namespace or settings.namespaces
    if not namespaces and not args.all_namespaces:
        raise CliError("watch what? pass --namespace NS (repeatable) or --all-namespaces")
    from conveyor.kube.credentials import Connection, NoCredentials

    try:  # before Kopf, which would log a traceback and retry a missing kubeconfig forever
        Connection.from_environment()
    except NoCredentials as err:
        raise CliError(str(err)) from None
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    kopf.configure(verbose=args.debug)
    if not args.debug:  # "Handler ... succeeded" on every watch event: a line per event, and slow
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=args.peering is None,
        peering_name=args.peering,
        clusterwide=args.all_namespaces,
        namespaces=[] if args.all_namespaces else namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(settings=settings),
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    import tempfile

    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # before prometheus_client is imported: workers share their metrics through files
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="conveyor-metrics-")
    from conveyor.serving.model import ModelError, ServedModel, resolve_champion, resolve_uri

    if bool(args.model) == bool(args.pipeline):
        raise CliError("serve what? pass --model URI, or --pipeline NAME (its champion) with --store")
    try:
        resolved = (
            resolve_uri(args.model, args.reference)
            if args.model
            else resolve_champion(args.pipeline, args.store, args.namespace)
        )
        model = ServedModel.load(resolved, args.backend)
    except ModelError as err:
        raise CliError(str(err)) from None
    if model.profile is None:
        print("warning: no reference profile: drift is not measured", file=sys.stderr)
    print(
        f"serving {model.name} (run {model.version}, sha256 {model.sha256[:12]}, {model.backend}) on "
        f"http://{args.host}:{args.port} with {args.workers} worker(s)",
        file=sys.stderr,
        flush=True,
    )
    if args.workers <= 1:
        _serve(model, args, reuse_port=False)
        return 0
    children = []
    for _ in range(args.workers):  # forked after loading: the model is shared copy-on-write
        pid = os.fork()
        if pid == 0:
            try:
                _serve(model, args, reuse_port=True)
            finally:
                os._exit(0)
        children.append(pid)
    import signal

    def stop(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        os.waitpid(child, 0)
    return 0


def _serve(model: object, args: argparse.Namespace, reuse_port: bool) -> None:
    from aiohttp import web

    from conveyor.serving.app import InferenceServer, ServeOptions
    from conveyor.serving.model import ServedModel
    from conveyor.serving.monitor import DriftMonitor

    assert isinstance(model, ServedModel)
    monitor = DriftMonitor(
        model.name,
        model.version,
        model.profile,
        window=args.window,
        min_samples=args.min_samples,
        method=args.drift_method,
        max_bytes=args.window_max_bytes,
    )
    options = ServeOptions(
        max_rows=args.max_rows,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        drift_interval=args.drift_interval,
        batching=args.batching,
        max_batch_size=args.max_batch_size,
        max_latency_ms=args.max_latency_ms,
        feedback_window=args.feedback_window,
        quality_window=args.quality_window,
    )
    server = InferenceServer(model, monitor, options)
    web.run_app(
        server.app(), host=args.host, port=args.port, print=None, access_log=None, reuse_port=reuse_port
    )
