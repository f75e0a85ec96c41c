"""The segments' Louvain (recommender.analysis.louvain) gives networkx's communities exactly.

The port repeats networkx's steps on lists; these tests compare the two on random weighted
graphs (self-loops, isolated nodes, integer and float weights, missing weights) at several
resolutions, thresholds and seeds, and compare the segments' graph copy with the subgraph copy it
replaces.
"""

from __future__ import annotations

import random
from typing import Any

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.analysis import louvain
from recommender.analysis.segments import _without

pytestmark = pytest.mark.skipif(
    not louvain.mirrors_networkx(),
    reason=f"networkx {nx.__version__} is not a version the port mirrors (it defers to it)",
)


@st.composite
def _graphs(draw: Any) -> nx.Graph:
    size = draw(st.integers(1, 40))
    names = draw(st.sampled_from(["str", "int", "mixed-order"]))
    nodes: list[Any] = list(range(size))
    if names == "str":
        nodes = [f"workload:ns-{i % 4}/svc-{i}" for i in range(size)]
    elif names == "mixed-order":
        nodes = draw(st.permutations(list(range(size))))
    g = nx.Graph()
    g.add_nodes_from(nodes)
    pairs = draw(
        st.lists(
            st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)), max_size=4 * size
        )
    )
    weights = st.one_of(
        st.floats(0.01, 50, allow_nan=False), st.integers(1, 9), st.just(None)
    )
    for a, b in pairs:
        if a == b and not draw(st.booleans()):
            continue  # some self-loops
        w = draw(weights)
        if w is None:
            g.add_edge(nodes[a], nodes[b])  # no weight: counts 1
        else:
            g.add_edge(nodes[a], nodes[b], weight=w)
    return g


@settings(max_examples=400, deadline=None)
@given(
    g=_graphs(),
    resolution=st.sampled_from([1, 1.0, 0.3, 0.9, 2.5]),
    threshold=st.sampled_from([0.0000001, 0.0, 0.01]),
    seed=st.integers(0, 2**32),
)
def test_same_communities_as_networkx(
    g: nx.Graph, resolution: float, threshold: float, seed: int
) -> None:
    want = nx.community.louvain_communities(
        g, weight="weight", resolution=resolution, threshold=threshold, seed=seed
    )
    got = louvain.louvain_communities(
        g, weight="weight", resolution=resolution, threshold=threshold, seed=seed
    )
    assert got == want  # the same sets in the same order


def test_same_communities_on_clustered_graphs() -> None:
    # Larger graphs with communities, several levels deep, and a shared random generator
    # (its state after the run must match too).
    for n in (60, 300, 1200):
        g = nx.Graph()
        rng = random.Random(n)
        nodes = [f"workload:ns-{i // 25:03d}/svc-{i:05d}" for i in range(n)]
        g.add_nodes_from(nodes)
        for _ in range(n * 3):
            a = rng.randrange(n)
            near = min(a - a % 25 + rng.randrange(25), n - 1)
            b = near if rng.random() < 0.8 else rng.randrange(n)
            if a != b:
                g.add_edge(nodes[a], nodes[b], weight=1.0 + rng.random() * 3)
        for seed in (0, 7):
            mine, theirs = random.Random(seed), random.Random(seed)
            want = nx.community.louvain_communities(g, weight="weight", seed=theirs)
            got = louvain.louvain_communities(g, weight="weight", seed=mine)
            assert got == want
            assert mine.random() == theirs.random()


def test_other_graph_kinds_go_to_networkx() -> None:
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a"), ("d", "e")])
    assert louvain.louvain_communities(g, seed=1) == nx.community.louvain_communities(g, seed=1)
    empty = nx.Graph()
    empty.add_nodes_from("xyz")
    assert louvain.louvain_communities(empty, seed=1) == [{"x"}, {"y"}, {"z"}]


@settings(max_examples=200, deadline=None)
@given(g=_graphs(), data=st.data())
def test_graph_without_nodes_is_the_subgraph_copy(g: nx.Graph, data: Any) -> None:
    for n in g:
        g.nodes[n]["kind"] = "workload"
    # At most half dropped: beyond that networkx's filtered views iterate the kept nodes in
    # the order of a set of them (which varies with the hash seed); ours keeps graph order.
    drop = set(data.draw(st.lists(st.sampled_from(list(g)), max_size=len(g) // 2)))
    want = g.subgraph([n for n in g if n not in drop]).copy()
    got = _without(g, drop)
    assert list(got.nodes(data=True)) == list(want.nodes(data=True))
    assert [(u, list(v.items())) for u, v in got.adjacency()] == [
        (u, list(v.items())) for u, v in want.adjacency()
    ]


def _wide_edges(workloads: int, namespaces: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(workloads):
        ns = f"ns-{i % namespaces:02d}"
        for _ in range(4):
            j = rng.randrange(workloads)
            if rng.random() < 0.8:
                j = j - j % namespaces + i % namespaces  # mostly the same namespace
            j = min(j, workloads - 1)
            rows.append({
                "src_kind": "workload", "src_namespace": ns, "src_id": f"svc-{i}",
                "dst_kind": "workload", "dst_namespace": f"ns-{j % namespaces:02d}",
                "dst_id": f"svc-{j}", "protocol": "TCP", "dst_port": 8000 + rng.randrange(3),
                "connections": rng.randrange(1, 500),
            })  # fmt: skip
        rows.append({
            "src_kind": "workload", "src_namespace": ns, "src_id": f"svc-{i}",
            "dst_kind": "workload", "dst_namespace": "kube-system", "dst_id": "coredns",
            "protocol": "UDP", "dst_port": 53, "connections": 10,
        })  # fmt: skip
    return rows


@pytest.mark.parametrize(("workloads", "namespaces", "seed"), [(60, 4, 0), (400, 12, 1)])
def test_segments_are_those_of_networkx_louvain(
    workloads: int, namespaces: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The whole proposal (members, names, cohesion, modularity, flows) with the port and with
    # networkx's own Louvain.
    from recommender.analysis import segments
    from recommender.analysis.graph import graph_from_edges

    graph = graph_from_edges(_wide_edges(workloads, namespaces, seed))
    got = segments.propose_segments(graph).to_dict()
    with monkeypatch.context() as patched:
        patched.setattr(
            segments,
            "louvain_communities",
            lambda g, **kw: nx.community.louvain_communities(g, **kw),
        )
        want = segments.propose_segments(graph).to_dict()
    assert got == want
    assert len(got["segments"]) > 2
