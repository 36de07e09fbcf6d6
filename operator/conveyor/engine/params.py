"""`$(params.NAME)` references in stage options."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from conveyor.errors import UserError

PARAM_REF = re.compile(r"\$\(params\.([A-Za-z_][A-Za-z0-9_.-]*)\)")


class UnresolvedParam(UserError):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name, path)
        self.name = name
        self.path = path


def references(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (param name, path of the value) referenced inside a nested value."""
    if isinstance(value, str):
        return [(m.group(1), path) for m in PARAM_REF.finditer(value)]
    if isinstance(value, Mapping):
        return [r for k, v in value.items() for r in references(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in references(v, f"{path}[{i}]")]
    return []


def substitute(value: Any, params: Mapping[str, str], path: str = "") -> Any:
    """Replace references. A value that is exactly one reference takes the parameter's
    YAML type (`"0.9"` becomes 0.9), so numeric options can come from parameters."""
    if isinstance(value, str):
        whole = PARAM_REF.fullmatch(value)
        if whole:
            name = whole.group(1)
            if name not in params:
                raise UnresolvedParam(name, path)
            return _typed(params[name])

        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in params:
                raise UnresolvedParam(m.group(1), path)
            return params[m.group(1)]

        return PARAM_REF.sub(repl, value)
    if isinstance(value, Mapping):
        return {k: substitute(v, params, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _typed(text: str) -> Any:
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return parsed if isinstance(parsed, int | float | bool | str) else text
