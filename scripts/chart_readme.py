"""Write charts/conveyor/README.md from the chart's values.yaml: every value, its default and
the `# --` comment above it (run by scripts/render_manifests.py, so `make manifests`).

A key with a `# --` comment is one documented value (its default is everything under it); a key
without one is a section whose keys are documented one by one. A leaf without a comment is an
error: every value the chart takes is described.

Usage: python scripts/chart_readme.py [values.yaml]   (prints the README)
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "conveyor"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")

HEAD = """# Conveyor Helm chart

The Conveyor operator, its CRDs and RBAC, optionally a single-node MinIO, monitoring objects
(ServiceMonitor, PrometheusRule, a Grafana dashboard), NetworkPolicies and a PodDisruptionBudget.

```sh
helm install conveyor charts/conveyor --namespace conveyor --create-namespace \\
  --set image.repository=registry.example.com/conveyor --set image.tag=0.1.0
```

`values.schema.json` rejects unknown keys and wrong types. Scenarios that CI lints, renders,
validates and scans are in `ci/`. Requires Kubernetes {kube}.

## Values

Generated from `values.yaml` by `scripts/chart_readme.py` (`make manifests`); do not edit.

| Key | Default | Description |
| --- | --- | --- |
"""


@dataclass
class Value:
    path: str
    default: Any
    doc: str


def documented(text: str) -> dict[str, str]:
    """Dotted path -> the `# --` comment right above that key (continuation lines joined)."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment is not None:
                comment.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if not match:
            comment = None if not stripped else comment
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if comment is not None:
            docs[".".join(k for _, k in stack)] = " ".join(comment)
        comment = None
    return docs


def values(path: Path) -> list[Value]:
    text = path.read_text()
    docs = documented(text)
    out: list[Value] = []
    undocumented: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted in docs:
                out.append(Value(dotted, value, docs[dotted]))
            elif isinstance(value, dict) and value:
                walk(value, dotted + ".")
            else:
                undocumented.append(dotted)

    walk(yaml.safe_load(text), "")
    if undocumented:
        raise SystemExit(f"{path}: no `# --` comment above {', '.join(undocumented)}")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(path: Path = CHART / "values.yaml") -> str:
    kube = yaml.safe_load((path.parent / "Chart.yaml").read_text()).get("kubeVersion", "any version")
    rows = [
        f"| `{v.path}` | `{_cell(json.dumps(v.default, separators=(', ', ': ')))}` | {_cell(v.doc)} |"
        for v in values(path)
    ]
    return HEAD.replace("{kube}", f"`{kube}`") + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else CHART / "values.yaml"), end="")
