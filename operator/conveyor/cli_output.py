"""Conventions the commands share, as kubectl's: `-o json|yaml|wide|name` (else a table on a
terminal, colour only there and Rich honours NO_COLOR, and tab-separated lines for scripts), and
`-n NAMESPACE` checked as Kubernetes checks one."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

FORMATS = ("json", "yaml", "wide", "name")


def add_output_option(
    p: argparse.ArgumentParser, formats: Sequence[str] = FORMATS, default: str = "a table"
) -> None:
    described = {
        "json": "json",
        "yaml": "yaml",
        "wide": "wide (more columns)",
        "name": "name (one name a line, as the other commands take it)",
    }
    p.add_argument(
        "-o",
        "--output",
        choices=formats,
        metavar="FORMAT",
        help=f"{', '.join(described[f] for f in formats)} (default: {default})",
    )


def add_json_alias(p: argparse.ArgumentParser) -> None:
    """The `--json` these commands had before `-o`: kept, the same as `-o json`."""
    p.add_argument("--json", action="store_const", const="json", dest="output", help="the same as -o json")


def namespace(value: str) -> str:
    """An argparse type: a namespace is a DNS-1123 label (it is also a folder in the store)."""
    from conveyor.engine.names import DNS1123_LABEL_RE

    if len(value) > 63 or not DNS1123_LABEL_RE.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a namespace name: lowercase letters, digits and '-', at most 63 characters"
        )
    return value


def dump(data: Any, fmt: str) -> None:
    """`data` (JSON-ready: dicts, lists, strings, numbers) as JSON or YAML on stdout."""
    if fmt == "json":
        print(json.dumps(data, indent=2))
    elif fmt == "yaml":
        import yaml

        print(yaml.safe_dump(data, sort_keys=False, width=110), end="")
    else:
        raise ValueError(f"not a data format: {fmt}")


def names(items: Sequence[str]) -> None:
    for item in items:
        print(item)


def table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None, nowrap: int = -1
) -> None:
    """A table on a terminal; one row a line, tab-separated, without a header, for scripts.
    Column `nowrap` is never cut (a name another command needs whole)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        for row in rows:
            sys.stdout.write("\t".join(row) + "\n")
        return
    from rich.markup import escape
    from rich.table import Column, Table

    cols = [
        Column(c, no_wrap=True, min_width=max((len(r[i]) for r in rows), default=len(c)))
        if i == nowrap
        else Column(c)
        for i, c in enumerate(columns)
    ]
    out = Table(*cols, caption=caption)
    for row in rows:
        out.add_row(*(escape(cell) for cell in row))
    console.print(out)
