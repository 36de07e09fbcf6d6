"""Server CPU per request, throughput and latency of `conveyor serve` (ONNX, drift on) against
the same server at another git revision, alternating, in one run.

The base revision's `operator/` is extracted with `git archive` into a temporary folder and run
from there (`PYTHONPATH`), with this checkout's interpreter and packages; both serve the same
model, trained once by this checkout's `conveyor run`, on the same port, started afresh for
each round (base first, then head). A round is `hey -c C` for `--seconds` after 300 warm-up
requests; the server's CPU per request is its utime + stime (`/proc/<pid>/stat`, the server
process alone) over the measured requests. `--hog N` starts N CPU-bound processes beside them
for the whole run (a shared machine). Prints each round and the medians' ratios (head / base).

Usage: python bench/serving_ab.py [--base REV] [--rounds 3] [--seconds 5] [--concurrency 8]
                                  [--hog N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import serving
import serving_peers as peers

REPO = Path(__file__).resolve().parent.parent
WARM_UP = 300
HOG = "while True:\n    pass\n"


def extract(revision: str, into: Path) -> Path:
    """The revision's `operator/` folder, extracted under `into`; its path."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "operator"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "operator"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def round_of(
    label: str, env: dict[str, str], model_uri: str, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    port = peers.free_port()
    body = tmp / "body.json"
    argv = peers.conveyor_argv(model_uri, "onnx", port)
    proc, _ = peers.start(argv, port, body.read_bytes(), tmp / f"{label}.log", env)
    try:
        url = peers.infer_url(port)
        common = ["-c", str(args.concurrency), "-m", "POST", "-T", "application/json", "-D", str(body)]
        common.append("-disable-compression")
        subprocess.run([str(args.hey), "-n", str(WARM_UP), *common, url], capture_output=True, check=True)
        before = cpu_seconds(proc.pid)
        argv = [str(args.hey), "-z", f"{args.seconds:g}s", *common, url]
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
        used = cpu_seconds(proc.pid) - before
    finally:
        peers.stop(proc)
    result: dict[str, Any] = serving.parse_hey(out.stdout)
    if result["errors"]:
        raise SystemExit(f"{label}: {result['errors']} failed requests")
    result["cpu_ms"] = 1000 * used / result["requests"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD~1", help="the git revision to compare with (default HEAD~1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--hog", type=int, default=0, help="CPU-bound processes running beside (default 0)")
    args = parser.parse_args()
    args.hey = serving.ensure_hey()
    if args.hey is None:
        raise SystemExit("no hey and no go to install it with: this benchmark needs hey")
    from sklearn.datasets import load_breast_cancer

    row = load_breast_cancer(as_frame=True).frame.drop(columns="target").iloc[0].to_dict()
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hog)]
    try:
        with tempfile.TemporaryDirectory(prefix="conveyor-ab-") as d:
            tmp = Path(d)
            (tmp / "body.json").write_bytes(peers.v2_body(row))
            base = {"PYTHONPATH": str(extract(args.base, tmp))}
            model = serving.train(tmp)
            rounds: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
            for i in range(args.rounds):
                for label, env in (("base", base), ("head", {})):
                    r = round_of(label, env, model["uri"], args, tmp)
                    rounds[label].append(r)
                    serving.log(
                        f"round {i + 1} {label}: {r['cpu_ms']:.3f} ms CPU/request  {r['rps']:7.0f} req/s  "
                        f"p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms"
                    )
    finally:
        for hog in hogs:
            hog.kill()
    print(
        f"base {args.base}, head the checkout; c={args.concurrency}, {args.seconds:g} s per round, "
        f"{args.rounds} rounds, {args.hog} CPU hog(s)"
    )
    print(f"{'':22s} {'base':>9s} {'head':>9s} {'head/base':>9s}")
    rows = (("cpu_ms", "CPU ms per request"), ("rps", "req/s"), ("p50", "p50 ms"), ("p99", "p99 ms"))
    for key, what in rows:
        b = statistics.median(r[key] for r in rounds["base"])
        h = statistics.median(r[key] for r in rounds["head"])
        print(f"{what:22s} {b:9.3f} {h:9.3f} {h / b:9.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
