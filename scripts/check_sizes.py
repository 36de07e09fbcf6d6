"""Size limits the style guide sets, checked in `make lint`: no module over 400 lines, no
function (decorators included) over 60, under operator/conveyor/. Prints the offenders and
exits 1 if there are any; `--top N` also lists the N longest functions."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "operator" / "conveyor"


def sizes(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    modules, functions = [], []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        name = str(path.relative_to(root.parent))
        modules.append((len(source.splitlines()), name))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                end = node.end_lineno or node.lineno
                functions.append((end - start + 1, f"{name}:{node.lineno} {node.name}"))
    return sorted(modules, reverse=True), sorted(functions, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-module", type=int, default=400)
    parser.add_argument("--max-function", type=int, default=60)
    parser.add_argument("--top", type=int, default=0, help="also list the N longest functions")
    args = parser.parse_args()
    modules, functions = sizes(ROOT)
    bad = [f"module {n} lines: {w}" for n, w in modules if n > args.max_module]
    bad += [f"function {n} lines: {w}" for n, w in functions if n > args.max_function]
    for n, where in functions[: args.top]:
        print(f"{n:4d} {where}")
    print(
        f"{len(modules)} modules (longest {modules[0][0]} lines), {len(functions)} functions "
        f"(longest {functions[0][0]} lines); limits {args.max_module} and {args.max_function}"
    )
    for line in bad:
        print("too long:", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
