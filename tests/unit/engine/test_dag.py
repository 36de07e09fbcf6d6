import itertools

from hypothesis import given
from hypothesis import strategies as st

from conveyor.engine.dag import ancestors, descendants, find_cycle, topological_order


def test_cycle_is_reported_as_a_closed_path() -> None:
    edges = {"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"]}
    cycle = find_cycle(edges)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"b", "c", "d"}


def test_self_dependency_is_a_cycle() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_no_cycle_in_a_diamond() -> None:
    edges = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert find_cycle(edges) is None
    assert topological_order(edges) == ["a", "b", "c", "d"]
    assert ancestors(edges, "d") == {"a", "b", "c"}
    assert descendants(edges, "b") == {"d"}


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """Random DAGs: each node depends only on nodes declared before it."""
    n = draw(st.integers(1, 12))
    names = [f"s{i}" for i in range(n)]
    return {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        for i, name in enumerate(names)
    }


@given(dags())
def test_topological_order_respects_every_edge(edges: dict[str, list[str]]) -> None:
    order = topological_order(edges)
    assert sorted(order) == sorted(edges)
    pos = {n: i for i, n in enumerate(order)}
    assert all(pos[d] < pos[n] for n, deps in edges.items() for d in deps)
    assert find_cycle(edges) is None


@given(dags(), st.data())
def test_adding_a_back_edge_makes_a_cycle(edges: dict[str, list[str]], data: st.DataObject) -> None:
    nodes = list(edges)
    node = data.draw(st.sampled_from(nodes))
    up = ancestors(edges, node)
    if not up:
        return
    first = data.draw(st.sampled_from(sorted(up)))
    edges[first] = [*edges[first], node]
    cycle = find_cycle(edges)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert all(b in edges[a] for a, b in itertools.pairwise(cycle))
