"""The servers `bench/serving.py` compares, each given the same fitted pipeline in its own format.

- null: uvicorn + a raw ASGI app answering a constant, no model: the floor of this harness (what
  the load generator and HTTP alone cost on this machine), not a competitor.
- bare: uvicorn + a raw ASGI app (in this venv) that parses the V2 JSON body into a DataFrame and
  calls the skops-loaded pipeline's `predict` in the event loop: no validation, metrics or drift.
- KServe: its sklearn server is not published on PyPI (it lives in the kserve repository,
  `python/sklearnserver`), so a small launcher does what that server does with the `kserve`
  package's own `kserve.Model` and `kserve.ModelServer`: `joblib.load` the one model file in the
  model directory and `predict` on `kserve.utils.utils.get_predict_input(payload)` (a DataFrame for
  a V2 request with `"content_type": "pd"`), answered by `get_predict_response`.
- MLServer: `mlserver start` with the `mlserver-sklearn` runtime and its default settings.
- Conveyor: `conveyor serve --model <uri> --backend onnx|skops` (otherwise the defaults: drift on),
  both backends on the same run's model (its model.onnx or its model.skops).

Also how a server process is started (timed to its first prediction), stopped and measured.
KServe and MLServer run in their own venvs, created here under a cache folder and reused, with
scikit-learn, numpy and joblib pinned to this venv's versions so the exported `model.joblib` loads.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

MODEL_NAME = "breast-cancer"
KSERVE = "kserve==0.21.0"
# uvloop 0.22 breaks MLServer 1.7.1's inference workers ("There is no current event loop";
# SeldonIO/MLServer issue 2286, fix not released): keep the uvloop it was released with.
MLSERVER = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]
DEFAULT_VENVS = Path.home() / ".cache" / "conveyor" / "bench-venvs"

NULL_APP = textwrap.dedent("""
    import sys
    import uvicorn
    OUT = b'{"outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [0]}]}'

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": OUT})

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
""")

BARE_APP = textwrap.dedent("""
    import json, sys
    import pandas as pd
    import skops.io as sio
    import uvicorn
    path, port = sys.argv[1], int(sys.argv[2])
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
        inputs = json.loads(body)["inputs"]
        frame = pd.DataFrame({i["name"]: i["data"] for i in inputs})
        preds = model.predict(frame).tolist()
        out = {"outputs": [{"name": "predict", "datatype": "INT64", "shape": [len(preds)], "data": preds}]}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(out).encode()})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
""")

# What KServe's sklearnserver does (python/sklearnserver/sklearnserver/{__main__,model}.py in the
# kserve repository), written against the kserve package's public API; the model directory is
# local, so there is no storage download step.
KSERVE_LAUNCHER = textwrap.dedent("""
    import argparse, pathlib
    import joblib
    import kserve
    from kserve.utils.utils import get_predict_input, get_predict_response

    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()

    class SKLearnModel(kserve.Model):
        def __init__(self, name, model_dir):
            super().__init__(name)
            self.model_dir = model_dir
            self.ready = False

        def load(self):
            files = [p for p in pathlib.Path(self.model_dir).iterdir()
                     if p.is_file() and p.suffix in (".joblib", ".pkl", ".pickle")]
            if len(files) != 1:
                raise RuntimeError(f"expected one model file in {self.model_dir}, found {files}")
            self._model = joblib.load(files[0])
            self.ready = True
            return self.ready

        def predict(self, payload, headers=None):
            result = self._model.predict(get_predict_input(payload))
            return get_predict_response(payload, result, self.name)

    model = SKLearnModel(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer().start([model])
""")


def pins() -> list[str]:
    """This venv's versions of what a pickled scikit-learn pipeline needs to load the same."""
    return [f"{name}=={version(name)}" for name in ("scikit-learn", "numpy", "joblib")]


def ensure_venv(root: Path, name: str, requirements: list[str]) -> Path:
    """The python of venv `root/name` with `requirements` installed (created once, then reused;
    installed into again when the requirements change)."""
    venv = root / name
    python = venv / "bin" / "python"
    marker = venv / "bench-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"installing {' '.join(requirements)} into {venv} ...", file=sys.stderr, flush=True)
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    log = venv / "pip.log"
    with log.open("w") as out:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise SystemExit(f"pip install into {venv} failed:\n{log.read_text()[-3000:]}")
    marker.write_text(wanted)
    return python


def model_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def export_joblib(model_uri: str, sha256: str, out: Path) -> tuple[Path, Path, Any]:
    """The pipeline's skops model (digest-checked) saved with joblib for KServe and for MLServer:
    (kserve model dir, mlserver model dir, the loaded pipeline)."""
    import joblib

    from conveyor.artifacts.models import load_model

    estimator = load_model(model_path(model_uri), sha256)
    kserve_dir, mlserver_dir = out / "kserve", out / "mlserver"
    for d in (kserve_dir, mlserver_dir):
        d.mkdir(parents=True)
        joblib.dump(estimator, d / "model.joblib")
    (mlserver_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
        )
    )
    return kserve_dir, mlserver_dir, estimator


def null_argv(tmp: Path, port: int) -> list[str]:
    app = tmp / "null_app.py"
    app.write_text(NULL_APP)
    return [sys.executable, str(app), str(port)]


def bare_argv(tmp: Path, model_uri: str, port: int) -> list[str]:
    app = tmp / "bare_app.py"
    app.write_text(BARE_APP)
    return [sys.executable, str(app), str(model_path(model_uri)), str(port)]


def kserve_argv(python: Path, tmp: Path, model_dir: Path, port: int, grpc_port: int) -> list[str]:
    launcher = tmp / "kserve_sklearn.py"
    launcher.write_text(KSERVE_LAUNCHER)
    return [
        str(python),
        str(launcher),
        "--model_dir",
        str(model_dir),
        "--model_name",
        MODEL_NAME,
        "--http_port",
        str(port),
        "--grpc_port",
        str(grpc_port),
    ]


def mlserver_argv(python: Path, model_dir: Path, port: int, grpc_port: int, metrics_port: int) -> list[str]:
    (model_dir / "settings.json").write_text(
        json.dumps({"http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port})
    )
    return [str(python.parent / "mlserver"), "start", str(model_dir)]


def conveyor_argv(model_uri: str, backend: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "conveyor",
        "serve",
        "--model",
        model_uri,
        "--backend",
        backend,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def v2_body(row: dict[str, Any]) -> bytes:
    """One row as the V2 request every server here takes: one FP64 input per column, and the
    request-level `"content_type": "pd"` that KServe and MLServer need to build a DataFrame."""
    inputs = [{"name": k, "datatype": "FP64", "shape": [1], "data": [v]} for k, v in row.items()]
    return json.dumps({"inputs": inputs, "parameters": {"content_type": "pd"}}).encode()


def infer_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss_mb(pid: int) -> float:
    """VmRSS of `pid` and all its descendants (MLServer runs inference in a child process)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        total += next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")), 0)
    return total / 1024


def post(url: str, body: bytes, timeout: float = 5) -> dict[str, Any]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        data: bytes = r.read()
        return data


def start(
    argv: list[str], port: int, body: bytes, logfile: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server (with `env` added to this environment); seconds from exec to its first
    successful (200) prediction."""
    url = infer_url(port)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    with logfile.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    last = ""
    while True:
        try:
            post(url, body, timeout=2)
            return proc, time.perf_counter() - t0
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}: {err.read()[:500]!r}"
        except OSError as err:
            last = str(err)
        if proc.poll() is not None or time.perf_counter() - t0 > 90:
            stop(proc)
            raise SystemExit(f"{argv[:4]} did not answer ({last}); its log:\n{logfile.read_text()[-3000:]}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
