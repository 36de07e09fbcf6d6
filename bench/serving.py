"""Serving throughput and latency of `conveyor serve` against a bare baseline, same run.

Baseline: uvicorn + a raw ASGI app that parses JSON and calls `model.predict` in the event
loop (no validation, no metrics, no drift). Load: single-row `/predict` requests from a
separate process (aiohttp, keep-alive connections) on 127.0.0.1, at concurrency 1, 8 and 32.

Scenarios:
  A. logistic regression (the breast-cancer pipeline's model), drift monitoring on, the
     server's defaults (opportunistic batching: what queued while the model was busy)
  B. a 100-tree random forest on the same data, `--batching` on, at concurrency 32
Also: idle memory and start-up to first prediction.

Targets: A at concurrency 8 >= 85% of the baseline's req/s and p99 < 10 ms; B >= 2x the
baseline's req/s with p99 < 400 ms.
Usage: python bench/serving.py [--seconds 15]
       BENCH_A_EXTRA="--drift-interval 60" python bench/serving.py   (extra `conveyor serve` flags for A)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
A_EXTRA = os.environ.get("BENCH_A_EXTRA", "").split()

BARE_APP = textwrap.dedent("""
    import json, sys
    import pandas as pd
    import skops.io as sio
    path = sys.argv[1]
    model = sio.load(path, trusted=sio.get_untrusted_types(file=path))

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        rows = json.loads(body)["instances"]
        preds = model.predict(pd.DataFrame.from_records(rows)).tolist()
        out = json.dumps({"predictions": preds}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})
""")

LOAD = textwrap.dedent("""
    import asyncio, json, sys, time
    import aiohttp
    url, concurrency, seconds, rows_file = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    rows = json.load(open(rows_file))
    bodies = [json.dumps({"instances": [r]}).encode() for r in rows]
    latencies, errors = [], 0

    async def worker(session, i, end):
        global errors
        n = i
        while time.perf_counter() < end:
            body = bodies[n % len(bodies)]
            n += concurrency
            t = time.perf_counter()
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t)

    async def main():
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as s:
            for _ in range(20):  # warm-up
                async with s.post(url, data=bodies[0], headers={"Content-Type": "application/json"}) as r:
                    await r.read()
            start = time.perf_counter()
            end = start + seconds
            await asyncio.gather(*(worker(s, i, end) for i in range(concurrency)))
            elapsed = time.perf_counter() - start
        latencies.sort()
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
        print(json.dumps({"rps": len(latencies) / elapsed, "p50": q(0.5), "p99": q(0.99), "errors": errors}))

    asyncio.run(main())
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(argv: list[str], port: int, row: dict[str, Any]) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server; seconds from exec to its first successful prediction."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body = json.dumps({"instances": [row]}).encode()
    while True:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/predict", data=body, headers={"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=2).read()
            return proc, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t0 > 60:
                raise SystemExit(f"{argv} did not start") from None
            time.sleep(0.05)


def load(port: int, concurrency: int, seconds: float, rows_file: Path, tmp: Path) -> dict[str, float]:
    script = tmp / "load.py"
    script.write_text(LOAD)
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            f"http://127.0.0.1:{port}/predict",
            str(concurrency),
            str(seconds),
            str(rows_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def train(tmp: Path, estimator: str, params: dict[str, Any]) -> str:
    doc = (REPO / "examples" / "breast-cancer" / "pipeline.yaml").read_text()
    import yaml

    spec = yaml.safe_load(doc)
    train_stage = spec["spec"]["stages"][3]["with"]
    train_stage.pop("search", None)
    train_stage.update(estimator=estimator, params=params)
    spec["metadata"]["name"] = estimator.rsplit(".", 1)[1].lower()
    path = tmp / f"{spec['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = subprocess.run(
        [sys.executable, "-m", "conveyor", "run", str(path), "--store", str(tmp / "store"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    uri: str = json.loads(out.stdout)["model"]["uri"]
    return uri


async def _noop() -> None:
    return None


def scenario(
    name: str,
    model_uri: str,
    concurrencies: list[int],
    seconds: float,
    tmp: Path,
    rows_file: Path,
    row: dict[str, Any],
    extra: list[str],
) -> dict[str, Any]:
    bare_app = tmp / "bare_app.py"
    bare_app.write_text(BARE_APP)
    results: dict[str, Any] = {}
    for label, argv_of in (
        (
            "bare",
            lambda p: [
                sys.executable,
                "-c",
                f"import sys; sys.argv=['x', {model_uri.removeprefix('file://')!r}]; "
                f"exec(open({str(bare_app)!r}).read()); import uvicorn; "
                f"uvicorn.run(app, host='127.0.0.1', port={p}, log_level='warning')",
            ],
        ),
        (
            "conveyor",
            lambda p: [
                sys.executable,
                "-m",
                "conveyor",
                "serve",
                "--model",
                model_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
                *extra,
            ],
        ),
    ):
        port = free_port()
        proc, startup = start(argv_of(port), port, row)
        time.sleep(1)
        idle = rss_mb(proc.pid)
        try:
            results[label] = {"startup_s": startup, "idle_mb": idle}
            for c in concurrencies:
                results[label][c] = load(port, c, seconds, rows_file, tmp)
                print(
                    f"{name} {label:9s} c={c:2d}: {results[label][c]['rps']:7.0f} req/s  "
                    f"p50 {results[label][c]['p50']:6.1f} ms  p99 {results[label][c]['p99']:7.1f} ms  "
                    f"errors {results[label][c]['errors']}",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    from sklearn.datasets import load_breast_cancer

    rows = load_breast_cancer(as_frame=True).frame.drop(columns="target").to_dict(orient="records")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows_file = tmp / "rows.json"
        rows_file.write_text(json.dumps(rows))
        logreg = train(tmp, "sklearn.linear_model.LogisticRegression", {"max_iter": 2000})
        forest = train(
            tmp, "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 100, "random_state": 0}
        )
        a = scenario("A logreg+drift", logreg, [1, 8, 32], args.seconds, tmp, rows_file, rows[0], A_EXTRA)
        b = scenario(
            "B forest+batching",
            forest,
            [32],
            args.seconds,
            tmp,
            rows_file,
            rows[0],
            ["--batching", "--max-batch-size", "64", "--max-latency-ms", "2"],
        )
    ratio_a = a["conveyor"][8]["rps"] / a["bare"][8]["rps"]
    ratio_b = b["conveyor"][32]["rps"] / b["bare"][32]["rps"]
    print(
        f"A: conveyor / bare at c=8 = {ratio_a:.2f} (target >= 0.85), "
        f"conveyor p99 {a['conveyor'][8]['p99']:.1f} ms (target < 10 ms)"
    )
    print(
        f"B: conveyor / bare at c=32 = {ratio_b:.2f} (target >= 2.0), "
        f"conveyor p99 {b['conveyor'][32]['p99']:.1f} ms (target < 400 ms), "
        f"bare p99 {b['bare'][32]['p99']:.1f} ms"
    )
    print(
        f"idle memory: bare {a['bare']['idle_mb']:.0f} MB, conveyor {a['conveyor']['idle_mb']:.0f} MB; "
        f"start-up to first prediction: bare {a['bare']['startup_s']:.1f} s, "
        f"conveyor {a['conveyor']['startup_s']:.1f} s"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
