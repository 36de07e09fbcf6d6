"""`conveyor render | serve | operator`: the commands for a cluster and for serving."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.cli_errors import CliError
from conveyor.cli_output import add_output_option, dump, names, namespace

Command = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, Command, str], argparse.ArgumentParser]


def cmd_render(args: argparse.Namespace) -> int:
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
        _check_store_option(args.store)
        settings.store = args.store
    if args.namespace:  # as `kubectl apply -n`: where the run and its Jobs go
        if run is not None:
            run.metadata.namespace = args.namespace
        pipeline.metadata.namespace = args.namespace
    try:
        jobs = render_jobs(pipeline, run, settings)
    except InvalidResource as err:
        raise CliError("\n".join(map(str, err.problems))) from None
    _print_objects(jobs, args.output or "yaml")
    return 0


def _check_store_option(store: str) -> None:
    """`--store` as given, checked here so that an error names it and not $CONVEYOR_STORE."""
    from pydantic import ValidationError

    from conveyor.api.common import S3Store
    from conveyor.artifacts.uri import split_s3
    from conveyor.engine.validation import pydantic_problems

    where = split_s3(store)
    if where is None:
        raise CliError(f"--store {store!r}: the Jobs reach their store over S3: write s3://BUCKET[/PREFIX]")
    try:
        S3Store(bucket=where[0], prefix=where[1])
    except ValidationError as err:
        problems = pydantic_problems(err, "")
        raise CliError(f"--store {store!r}: " + "; ".join(map(str, problems))) from None


def _print_objects(objects: list[dict[str, Any]], fmt: str) -> None:
    """Kubernetes objects as kubectl prints them: a YAML stream, a JSON List, or kind/name."""
    import yaml

    if fmt == "name":
        names(
            [f"{o['kind'].lower()}.{o['apiVersion'].split('/')[0]}/{o['metadata']['name']}" for o in objects]
        )
    elif fmt == "json":
        dump({"apiVersion": "v1", "kind": "List", "items": objects}, "json")
    else:
        print(yaml.safe_dump_all(objects, sort_keys=False, width=110), end="")


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
    from prometheus_client import multiprocess

    while children:  # a worker that ends takes its live gauges with it (no stale series)
        pid, _ = os.wait()
        if pid in children:
            children.remove(pid)
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    return 0


def _serve(model: object, args: argparse.Namespace, reuse_port: bool) -> None:
    from conveyor.serving.app import InferenceServer, ServeOptions, serve
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
    serve(InferenceServer(model, monitor, options), args.host, args.port, reuse_port)


def add_cluster_commands(add: AddCommand, default_store: str) -> None:
    p = add("render", cmd_render, "Print the Jobs the operator would create for a run.")
    p.add_argument("-f", "--file", action="append", required=True, help="Pipeline / PipelineRun YAML")
    p.add_argument("--image", help="the stage image (default: $CONVEYOR_IMAGE or the release image)")
    p.add_argument(
        "--store",
        help="s3://bucket/prefix for pipelines without spec.artifacts.s3 "
        "(default: $CONVEYOR_STORE, as the operator)",
    )
    p.add_argument("--namespace", "-n", type=namespace, help="the run's namespace (default: the files')")
    add_output_option(p, ("yaml", "json", "name"), default="yaml")
    _add_serve_command(add, default_store)
    p = add("operator", cmd_operator, "Run the Kubernetes operator (settings from CONVEYOR_* env).")
    p.add_argument(
        "--namespace", "-n", type=namespace, action="append", default=[], help="watch this namespace"
    )
    p.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    p.add_argument("--peering", metavar="NAME", help="Kopf peering for HA (default: standalone)")


def _add_serve_command(add: AddCommand, default_store: str) -> None:
    p = add("serve", cmd_serve, "Serve a model over HTTP (V2 inference protocol), with drift metrics.")
    p.add_argument("--model", help="a run's model URI (file:// or s3://) or local path")
    p.add_argument("--reference", help="reference profile (default: the model's run's profile)")
    p.add_argument("--pipeline", help="serve this pipeline's current champion (with --store)")
    p.add_argument("--store", default=default_store, help=f"with --pipeline (default: {default_store})")
    p.add_argument("--namespace", "-n", type=namespace, default="default", help="with --pipeline")
    p.add_argument(
        "--backend",
        choices=("auto", "onnx", "skops"),
        default="auto",
        help="what computes predictions: onnxruntime on the run's model.onnx when it has one "
        "(auto, onnx) or scikit-learn on model.skops (default: auto)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (each keeps its own drift window; metrics are merged)",
    )
    p.add_argument("--window", type=int, default=1000, help="rows in the drift window")
    p.add_argument("--min-samples", type=int, default=100, help="rows before drift is reported")
    p.add_argument("--drift-method", choices=("psi", "ks"), default="psi")
    p.add_argument("--drift-interval", type=float, default=2.0, help="seconds between drift updates")
    p.add_argument(
        "--feedback-window",
        type=int,
        default=10000,
        help="predictions remembered by id for feedback (the oldest expire first)",
    )
    p.add_argument(
        "--quality-window", type=int, default=1000, help="labelled predictions the live quality is over"
    )
    p.add_argument("--max-rows", type=int, default=1000, help="rows per request")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument(
        "--body-timeout", type=float, default=10.0, help="seconds to receive a request body, else 408"
    )
    p.add_argument(
        "--window-max-bytes",
        type=int,
        default=32 << 20,
        help="bytes the drift window may take (caps --window)",
    )
    p.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="coalesce concurrent requests into one predict call (default: on)",
    )
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument(
        "--max-latency-ms",
        type=float,
        default=0.0,
        help="wait this long for more requests (default 0: batch only what queued meanwhile)",
    )
