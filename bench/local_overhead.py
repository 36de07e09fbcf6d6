"""Wall time of `conveyor run` against two floors measured in the same run.

    floor A: one Python process doing the five steps (ingest breast_cancer, validate,
             split + scale, logistic regression, evaluate)
    floor B: the same five steps as five Python processes passing files
    conveyor run --no-cache (each stage its own process, forked from a warm server)
    conveyor run, fully cached re-run

Prints each median wall time and the ratios; targets: --no-cache <= 2x floor A, cached <= 1 s.
Usage: python bench/local_overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIPELINE = HERE / "five-stage.yaml"

STEPS = {
    "ingest": """
        from sklearn.datasets import load_breast_cancer
        df = load_breast_cancer(as_frame=True).frame
        df.to_parquet(W / "data.parquet")
    """,
    "validate": """
        import pandas as pd
        df = pd.read_parquet(W / "data.parquet")
        assert len(df) >= 500 and set(df["target"].unique()) <= {0, 1}
        assert df.isna().mean().max() == 0
    """,
    "transform": """
        import pandas as pd
        from sklearn.model_selection import train_test_split
        df = pd.read_parquet(W / "data.parquet")
        tr, te = train_test_split(df, test_size=0.25, random_state=42, stratify=df["target"])
        tr.to_parquet(W / "train.parquet"); te.to_parquet(W / "test.parquet")
    """,
    "train": """
        import pandas as pd, skops.io as sio
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.linear_model import LogisticRegression
        tr = pd.read_parquet(W / "train.parquet")
        m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        m.fit(tr.drop(columns="target"), tr["target"])
        sio.dump(m, W / "model.skops")
    """,
    "evaluate": """
        import json, pandas as pd, skops.io as sio
        from sklearn.metrics import accuracy_score
        te = pd.read_parquet(W / "test.parquet")
        path = W / "model.skops"
        m = sio.load(path, trusted=sio.get_untrusted_types(file=path))
        acc = accuracy_score(te["target"], m.predict(te.drop(columns="target")))
        (W / "metrics.json").write_text(json.dumps({"accuracy": acc}))
        assert acc >= 0.9
    """,
}


def script(steps: list[str], workdir: Path) -> str:
    head = f"from pathlib import Path\nW = Path({str(workdir)!r})\n"
    return head + "\n".join(textwrap.dedent(STEPS[s]) for s in steps)


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def one_process(tmp: Path) -> float:
    return timed([sys.executable, "-c", script(list(STEPS), tmp)])


def five_processes(tmp: Path) -> float:
    start = time.perf_counter()
    for step in STEPS:
        subprocess.run([sys.executable, "-c", script([step], tmp)], check=True)
    return time.perf_counter() - start


def conveyor(store: Path, *extra: str) -> float:
    return timed(
        [
            sys.executable,
            "-m",
            "conveyor",
            "run",
            str(PIPELINE),
            "--store",
            str(store),
            "--json",
            *extra,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {k: [] for k in ("one", "five", "nocache", "cached")}
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            results["one"].append(one_process(tmp))
            results["five"].append(five_processes(tmp))
            results["nocache"].append(conveyor(tmp / "store", "--no-cache"))
            results["cached"].append(conveyor(tmp / "store"))
        print(
            f"round {i + 1}/{args.repeat}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()),
            file=sys.stderr,
        )
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"floor A, one process:        {med['one']:.2f} s")
    print(f"floor B, five processes:     {med['five']:.2f} s")
    print(
        f"conveyor run --no-cache:     {med['nocache']:.2f} s  = "
        f"{med['nocache'] / med['one']:.2f}x "
        f"floor A (target <= 2.0x), {med['nocache'] / med['five']:.2f}x floor B"
    )
    print(
        f"conveyor run, fully cached:  {med['cached']:.2f} s  = {med['cached'] / med['one']:.2f}x "
        f"floor A (target <= 1 s)"
    )


if __name__ == "__main__":
    main()
