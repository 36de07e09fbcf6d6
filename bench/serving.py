"""Serving throughput, latency, idle memory and start-up of `conveyor serve` against its peers.

One run, one model: the breast-cancer example pipeline, trained once with `conveyor run`, served
by (see `serving_peers.py` for how each is started):
  null            uvicorn (httptools + uvloop, from the bench extra) + raw ASGI app answering a
                  constant: the harness's own floor, no model
  bare            uvicorn + raw ASGI app, predict in the event loop (a floor, not a product)
  kserve          KServe's sklearn-server logic on kserve.ModelServer, model.joblib
  mlserver        MLServer + mlserver-sklearn, model.joblib, default settings
  conveyor-onnx   `conveyor serve --backend onnx` on the run's model, drift on (the defaults)
  conveyor-skops  the same store and model URI, `--backend skops`
Before timing, each server's predictions on a sample of rows must equal Conveyor's (ONNX), and
Conveyor's must equal the pipeline's own `predict`. Under load every server gets the same V2
request body, one file sent unchanged by every request (`/v2/models/breast-cancer/infer`, one row:
one FP64 input per column, `"parameters": {"content_type": "pd"}`). Load comes from a separate
process on 127.0.0.1 at concurrency 1, 8 and 32, after a warm-up of 200 requests at that
concurrency: `hey` (Go, keep-alive, installed with `go install` into ~/.cache/conveyor/bin when
missing) or, with `--load-generator aiohttp` or when there is no `go`, a Python aiohttp client,
which costs more CPU. Idle RSS (the server's whole process tree) is read 1 s after the first
prediction; start-up is exec to first successful prediction. On a small shared machine the load
generator competes with the server for CPU: figures are noisy and relative.

Targets (issue 11): Conveyor (ONNX, drift on) >= 3x KServe's and MLServer's req/s at c=8, p99 < 5 ms
at c=8, start-up < 1 s, idle RSS < 150 MB.
Usage: python bench/serving.py [--seconds 10] [--quick] [--json] [--venvs DIR]
                               [--load-generator {hey,aiohttp}]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serving_peers as peers

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = [1, 8, 32]
SAMPLE = slice(None, None, 19)  # the rows whose predictions are compared across servers
WARM_UP = 200  # requests at the point's concurrency before each measured point
HEY_MODULE = "github.com/rakyll/hey@v0.1.4"
HEY = Path.home() / ".cache" / "conveyor" / "bin" / "hey"

LOAD = textwrap.dedent("""
    import asyncio, json, sys, time
    import aiohttp
    url, concurrency, seconds, body_file = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    warm_up = int(sys.argv[5])
    body = open(body_file, "rb").read()
    headers = {"Content-Type": "application/json"}
    latencies, errors = [], 0

    async def worker(session, end):
        global errors
        while time.perf_counter() < end:
            t = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    errors += r.status != 200
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - t)

    async def one(session):
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()

    async def main():
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as s:
            await asyncio.gather(*(one(s) for _ in range(warm_up)))
            start = time.perf_counter()
            end = start + seconds
            await asyncio.gather(*(worker(s, end) for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
        latencies.sort()
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
        print(json.dumps({"rps": len(latencies) / elapsed, "p50": q(0.5), "p99": q(0.99),
                          "requests": len(latencies), "errors": errors}))

    asyncio.run(main())
""")


@dataclass
class Server:
    label: str
    argv_of: Callable[[int], list[str]]  # port -> command line
    backend: str = ""  # for Conveyor: the backend its metadata must report
    check: bool = True  # its predictions must equal the pipeline's (not for the null server)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_hey() -> Path | None:
    """The `hey` binary, installed with `go install` when missing; None when it is missing and
    there is no `go` to install it with."""
    if HEY.exists():
        return HEY
    go = shutil.which("go")
    if go is None:
        return None
    log(f"installing {HEY_MODULE} into {HEY.parent} ...")
    env = {**os.environ, "GOBIN": str(HEY.parent)}
    done = subprocess.run([go, "install", HEY_MODULE], env=env, capture_output=True, text=True)
    if done.returncode != 0 or not HEY.exists():
        raise SystemExit(f"go install {HEY_MODULE} failed:\n{done.stderr[-3000:]}")
    return HEY


def parse_hey(text: str) -> dict[str, float]:
    """Requests/sec, p50 and p99 (ms) and errors from hey's summary. Errors are non-200 responses
    ("Status code distribution") plus failed requests ("Error distribution": connection refused or
    reset, timeouts), which hey leaves out of its latencies and of its `-o csv` output."""
    rps = re.search(r"^\s*Requests/sec:\s+([\d.]+)", text, re.M)
    if rps is None:
        raise SystemExit(f"no Requests/sec in hey's output:\n{text[-3000:]}")
    quantile = {int(p): float(s) * 1000 for p, s in re.findall(r"^\s+(\d+)% in ([\d.]+) secs", text, re.M)}
    codes, _, failures = text.partition("Error distribution:")
    status = {int(c): int(n) for c, n in re.findall(r"^\s+\[(\d+)\]\s+(\d+) responses", codes, re.M)}
    failed = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s", failures, re.M))
    return {
        "rps": float(rps.group(1)),
        "p50": quantile.get(50, float("nan")),
        "p99": quantile.get(99, float("nan")),
        "requests": sum(status.values()) + failed,
        "errors": sum(n for c, n in status.items() if c != 200) + failed,
    }


def load(
    hey: Path | None, port: int, concurrency: int, seconds: float, body_file: Path, tmp: Path
) -> dict[str, float]:
    """One measured point: `seconds` of load at `concurrency`, after a warm-up, from hey or (when
    `hey` is None) from the aiohttp script."""
    url = peers.infer_url(port)
    if hey is not None:
        common = ["-c", str(concurrency), "-m", "POST", "-T", "application/json", "-D", str(body_file)]
        common.append("-disable-compression")
        subprocess.run([str(hey), "-n", str(WARM_UP), *common, url], capture_output=True, check=True)
        argv = [str(hey), "-z", f"{seconds:g}s", *common, url]
    else:
        script = tmp / "load.py"
        script.write_text(LOAD)
        argv = [
            sys.executable,
            str(script),
            url,
            str(concurrency),
            str(seconds),
            str(body_file),
            str(WARM_UP),
        ]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"load generator {argv[0]} failed:\n{out.stderr[-3000:]}")
    if hey is not None:
        return parse_hey(out.stdout)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def predictions(port: int, rows: list[dict[str, Any]]) -> list[Any]:
    """The server's answer for each row, one request per row (the first output's only value)."""
    return [peers.post(peers.infer_url(port), peers.v2_body(r))["outputs"][0]["data"][0] for r in rows]


def check_predictions(label: str, port: int, rows: list[dict[str, Any]], reference: list[Any]) -> None:
    got = predictions(port, rows[SAMPLE])
    if got != reference:
        bad = [(i, g, r) for i, (g, r) in enumerate(zip(got, reference, strict=True)) if g != r]
        raise SystemExit(f"{label} predicts differently: (sample, got, want) {bad[:10]}")
    log(f"{label}: its {len(got)} sampled predictions equal the pipeline's and Conveyor's")


def conveyor_facts(port: int, expected_backend: str) -> dict[str, Any]:
    """What the Conveyor server says it runs (its V2 model metadata), checked against `expected_backend`."""
    meta = json.loads(peers.get(f"http://127.0.0.1:{port}/v2/models/{peers.MODEL_NAME}"))
    backend = meta.get("parameters", {}).get("backend")
    if backend != expected_backend:
        raise SystemExit(f"conveyor serve runs backend {backend!r}, expected {expected_backend!r}")
    return {"backend": backend}


def drift_window(port: int) -> float:
    text = peers.get(f"http://127.0.0.1:{port}/metrics").decode()
    found = re.search(r"^conveyor_drift_window_size\{[^}]*\}\s+(\S+)$", text, re.M)
    return float(found.group(1)) if found else float("nan")


def measure(
    server: Server,
    args: argparse.Namespace,
    tmp: Path,
    rows: list[dict[str, Any]],
    reference: list[Any],
) -> dict[str, Any]:
    """Start one server, check its predictions, then idle RSS and load at each concurrency."""
    port = peers.free_port()
    proc, startup = peers.start(
        server.argv_of(port), port, peers.v2_body(rows[0]), tmp / f"{server.label}.log"
    )
    try:
        time.sleep(1)
        result: dict[str, Any] = {"startup_s": startup, "idle_rss_mb": peers.tree_rss_mb(proc.pid)}
        if server.backend:
            result |= conveyor_facts(port, server.backend)
        if server.check:
            check_predictions(server.label, port, rows, reference)
        log(
            f"{server.label}: start-up {startup:.2f} s, "
            f"idle RSS {result['idle_rss_mb']:.0f} MB"
            + (f", backend {server.backend}" if server.backend else "")
        )
        for c in CONCURRENCY:
            r = result[str(c)] = load(args.hey, port, c, args.seconds, tmp / "body.json", tmp)
            log(
                f"  {server.label:14s} c={c:2d}: {r['rps']:7.0f} req/s  p50 {r['p50']:6.2f} ms  "
                f"p99 {r['p99']:7.2f} ms  errors {r['errors']}"
            )
        if server.backend:
            result["drift_window_rows"] = drift_window(port)
            log(f"  {server.label}: drift window holds {result['drift_window_rows']:.0f} rows after the load")
    finally:
        peers.stop(proc)
    return result


def train(tmp: Path) -> dict[str, Any]:
    """Train the example pipeline once; its model's URI and SHA-256 (the run's record)."""
    log("training examples/breast-cancer with conveyor run ...")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "run",
            str(REPO / "examples" / "breast-cancer" / "pipeline.yaml"),
            "--store",
            str(tmp / "store"),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"conveyor run failed:\n{out.stderr[-3000:]}")
    record: dict[str, Any] = json.loads(out.stdout)
    onnx = record["artifacts"]["train"].get("onnx")
    if onnx is None:
        raise SystemExit(
            "the train stage wrote no model.onnx (ONNX parity failed?): no ONNX backend to measure"
        )
    return {"uri": record["model"]["uri"], "sha256": record["model"]["sha256"], "run": record["run"]}


def servers(args: argparse.Namespace, tmp: Path, model: dict[str, Any]) -> tuple[list[Server], Any]:
    """The servers, in the order they are measured (Conveyor ONNX first: its answers are the
    reference), and the pipeline loaded from the skops file."""
    kserve_dir, mlserver_dir, estimator = peers.export_joblib(model["uri"], model["sha256"], tmp / "export")
    kserve_py = peers.ensure_venv(args.venvs, "kserve", [peers.KSERVE, *peers.pins()])
    mlserver_py = peers.ensure_venv(args.venvs, "mlserver", [*peers.MLSERVER, *peers.pins()])
    return [
        Server("null", lambda p: peers.null_argv(tmp, p), check=False),
        Server("conveyor-onnx", lambda p: peers.conveyor_argv(model["uri"], "onnx", p), backend="onnx"),
        Server("conveyor-skops", lambda p: peers.conveyor_argv(model["uri"], "skops", p), backend="skops"),
        Server("bare", lambda p: peers.bare_argv(tmp, model["uri"], p)),
        Server("kserve", lambda p: peers.kserve_argv(kserve_py, tmp, kserve_dir, p, peers.free_port())),
        Server(
            "mlserver",
            lambda p: peers.mlserver_argv(mlserver_py, mlserver_dir, p, peers.free_port(), peers.free_port()),
        ),
    ], estimator


def targets(results: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(what, value, target, met) for each of the issue's targets."""
    conv = results["conveyor-onnx"]
    ratio_k = conv["8"]["rps"] / results["kserve"]["8"]["rps"]
    ratio_m = conv["8"]["rps"] / results["mlserver"]["8"]["rps"]
    return [
        ("conveyor-onnx req/s / kserve req/s at c=8", ratio_k, ">= 3.0", ratio_k >= 3),
        ("conveyor-onnx req/s / mlserver req/s at c=8", ratio_m, ">= 3.0", ratio_m >= 3),
        ("conveyor-onnx p99 at c=8 (ms)", conv["8"]["p99"], "< 5", conv["8"]["p99"] < 5),
        ("conveyor-onnx start-up to first prediction (s)", conv["startup_s"], "< 1", conv["startup_s"] < 1),
        ("conveyor-onnx idle RSS (MB)", conv["idle_rss_mb"], "< 150", conv["idle_rss_mb"] < 150),
    ]


def load_generator(choice: str) -> tuple[Path | None, str]:
    """The hey binary (None: use the aiohttp script) and a line saying which generator runs."""
    hey = ensure_hey() if choice == "hey" else None
    if hey is not None:
        return hey, f"load from hey ({HEY_MODULE}, Go, keep-alive, no compression; latencies to 0.1 ms)"
    if choice == "hey":
        return None, "load from aiohttp (Python, keep-alive): FALLBACK, hey is missing and there is no `go`"
    return None, "load from aiohttp (Python, keep-alive)"


def table(results: dict[str, Any], seconds: float, generator: str) -> str:
    lines = [
        f"{seconds:g} s per point after {WARM_UP} warm-up requests; {generator}, a separate process; "
        "2 shared cores",
        "every server and every request gets the same V2 JSON body (one file, the same single row); "
        "null = a constant answer, no model: the harness's own floor",
        f"{'server':15s} {'c':>3s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s}"
        f" {'start-up s':>10s} {'idle RSS MB':>11s}",
    ]
    for label, r in results.items():
        for c in CONCURRENCY:
            p = r[str(c)]
            extra = f" {r['startup_s']:10.2f} {r['idle_rss_mb']:11.0f}" if c == CONCURRENCY[0] else ""
            lines.append(
                f"{label:15s} {c:3d} {p['rps']:8.0f} {p['p50']:8.2f} {p['p99']:8.2f} "
                f"{p['errors']:6.0f}{extra}"
            )
    lines.append("")
    for what, value, target, met in targets(results):
        lines.append(f"{'PASS' if met else 'MISS'}  {what}: {value:.2f} (target {target})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="seconds of load per point (default 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 s per point")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument(
        "--venvs",
        type=Path,
        default=peers.DEFAULT_VENVS,
        help=f"where the KServe and MLServer venvs live (default {peers.DEFAULT_VENVS})",
    )
    parser.add_argument(
        "--load-generator",
        choices=["hey", "aiohttp"],
        default="hey",
        help="hey (default; installed with `go install` when missing) or the Python aiohttp client",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds = 1.0
    args.hey, generator = load_generator(args.load_generator)
    log(generator)
    from sklearn.datasets import load_breast_cancer

    rows = load_breast_cancer(as_frame=True).frame.drop(columns="target").to_dict(orient="records")
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as d:
        tmp = Path(d)
        (tmp / "body.json").write_bytes(peers.v2_body(rows[0]))
        model = train(tmp)
        todo, estimator = servers(args, tmp, model)
        import pandas as pd

        own = [v.item() for v in estimator.predict(pd.DataFrame.from_records(rows[SAMPLE]))]
        # Conveyor ONNX is measured first and must answer as the pipeline's own predict does; every
        # other server must then answer the same, so the same as Conveyor.
        results = {s.label: measure(s, args, tmp, rows, own) for s in todo}
    report = {
        "seconds": args.seconds,
        "load_generator": generator,
        "model": model,
        "versions": {"peers": {"kserve": peers.KSERVE, "mlserver": peers.MLSERVER}, "pins": peers.pins()},
        "results": results,
        "targets": [{"what": w, "value": v, "target": t, "met": m} for w, v, t, m in targets(results)],
    }
    print(json.dumps(report, indent=2) if args.json else table(results, args.seconds, generator))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
