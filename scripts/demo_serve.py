"""The end of `make demo`: serve the champion, ask for one prediction, show the drift score.

Usage: python scripts/demo_serve.py [--store .conveyor] [--port 8000]
To keep serving:  .venv/bin/conveyor serve --pipeline breast-cancer --store .conveyor
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    result: dict[str, object] = json.loads(urllib.request.urlopen(req, timeout=10).read())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=".conveyor")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args()
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "serve",
            "--pipeline",
            "breast-cancer",
            "--store",
            args.store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--min-samples",
            "100",
            "--drift-interval",
            "0.5",
        ]
    )
    try:
        started = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() - started > 60:
                    raise SystemExit("the model server did not start") from None
                time.sleep(0.2)
        print(f"model server ready in {time.monotonic() - started:.1f}s")
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer(as_frame=True)
        rows = data.frame.drop(columns="target").sample(300, random_state=0)
        first = rows.iloc[0].to_dict()
        answer = post(f"{base}/predict", {"instances": [first]})
        label = data.target_names[answer["predictions"][0]]  # type: ignore[index]
        print(f"POST /predict (one patient) -> {answer['predictions']} ({label})")
        records = rows.to_dict(orient="records")
        for i in range(0, len(records), 50):
            post(f"{base}/predict", {"instances": records[i : i + 50]})
        time.sleep(1.2)
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        score = next(
            line.split()[-1] for line in metrics.splitlines() if line.startswith("conveyor_drift_score{")
        )
        print(
            f"after 300 in-distribution requests: conveyor_drift_score = {float(score):.3f} "
            "(PSI; > 0.25 = drift)"
        )
    finally:
        server.terminate()
        server.wait(10)
    print(
        "server stopped. To keep serving: .venv/bin/conveyor serve --pipeline breast-cancer --store .conveyor"
    )


if __name__ == "__main__":
    main()
