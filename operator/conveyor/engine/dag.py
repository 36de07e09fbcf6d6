"""The stage graph: ordering, cycles, descendants."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one cycle as a closed path `[a, b, ..., a]`, or None. Unknown nodes are ignored."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for dep in edges[node]:
            if dep not in color:
                continue
            if color[dep] == grey:
                return [*stack[stack.index(dep) :], dep]
            if color[dep] == white and (cycle := visit(dep)):
                return cycle
        stack.pop()
        color[node] = black
        return None

    for node in edges:
        if color[node] == white and (cycle := visit(node)):
            return cycle
    return None


def topological_order(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """Nodes so that each comes after its dependencies; ties keep declaration order."""
    remaining = {node: set(deps) & set(edges) for node, deps in edges.items()}
    order: list[str] = []
    while remaining:
        ready = [n for n, deps in remaining.items() if not deps]
        if not ready:
            raise ValueError(f"cycle: {' -> '.join(find_cycle(edges) or [])}")
        for node in ready:
            del remaining[node]
            order.append(node)
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def ancestors(edges: Mapping[str, Iterable[str]], node: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges[node])
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(edges.get(dep, ()))
    return seen


def descendants(edges: Mapping[str, Iterable[str]], node: str) -> set[str]:
    return {n for n in edges if node in ancestors(edges, n)}
