"""networkx's Louvain method, operation for operation, on plain lists instead of graph objects.

:func:`louvain_communities` gives the communities ``networkx.community.louvain_communities``
gives for an undirected simple graph (``nx.Graph``), with the same seed, resolution and
threshold. It is not another algorithm: it repeats networkx's own steps in the same order with
the same floating-point operations, so every intermediate number is the same bit for bit:

* the nodes in graph order and each node's neighbours in the order networkx's copy of the graph
  holds them (``add_weighted_edges_from(G.edges)``), the random shuffle of each level drawn from
  the same generator;
* the move gains written as networkx writes them (``remove_cost + wt / m - ...``), the
  per-community weights summed neighbour by neighbour, including the community a node leaves
  being appended last when none of its neighbours is in it;
* the levels' aggregate graphs with their edges and self-loops summed in networkx's edge order;
* the modularity that decides when to stop computed with the same sums over the same set
  iteration orders (the level's community sets are built with the same additions and removals).

What changes is the bookkeeping: integer node indices and lists rather than dict-of-dict graphs,
views and a new ``nx.Graph`` per level. At 8,000 workloads that halves the time of the segments'
community detection. ``tests/analysis/test_louvain.py`` compares the two on random weighted
graphs, with self-loops and isolated nodes, at several resolutions and seeds.

Only the installed networkx versions whose code this mirrors (:data:`MIRRORED`) take this path;
any other graph kind or networkx version goes to networkx itself.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Final

import networkx as nx

__all__ = ["MIRRORED", "louvain_communities", "mirrors_networkx"]

#: networkx versions (major.minor) whose ``louvain_partitions``, ``_one_level``,
#: ``_gen_graph`` and ``modularity`` this module repeats step by step: 3.3 to 3.6 changed
#: only their docs, the dispatch decorator and a new ``max_level`` (compared with 3.4.2 and
#: 3.6.1; the tests compare the port with whichever networkx is installed).
MIRRORED: Final = ("3.2", "3.3", "3.4", "3.5", "3.6")


def mirrors_networkx() -> bool:
    """True when the installed networkx is one whose Louvain code this module repeats."""
    return ".".join(nx.__version__.split(".")[:2]) in MIRRORED


def louvain_communities(
    graph: nx.Graph,
    weight: str = "weight",
    resolution: float = 1,
    threshold: float = 0.0000001,
    seed: Any = None,
) -> list[set[Any]]:
    """``networkx.community.louvain_communities(graph, weight, resolution, threshold, seed)``.

    The same list of sets in the same order. Directed graphs, multigraphs and networkx versions
    other than :data:`MIRRORED` are handed to networkx.
    """
    if graph.is_directed() or graph.is_multigraph() or not mirrors_networkx():
        found: list[set[Any]] = nx.community.louvain_communities(
            graph, weight=weight, resolution=resolution, threshold=threshold, seed=seed
        )
        return found
    rng = nx.utils.create_py_random_state(seed)
    labels: list[Any] = list(graph)
    partition: list[set[Any]] = [{u} for u in labels]
    if graph.number_of_edges() == 0:  # nx.is_empty
        return partition
    index = {u: i for i, u in enumerate(labels)}
    # Each node's neighbours (index, weight) as the graph holds them, and the graph's edges in
    # networkx's order (each node's neighbours not yet passed, self-loops included).
    own: list[list[tuple[int, Any]]] = []
    edges: list[tuple[int, int, Any]] = []
    for i, (_, nbrs) in enumerate(graph.adjacency()):
        row = [(index[v], dd.get(weight, 1)) for v, dd in nbrs.items()]
        own.append(row)
        edges.extend((i, j, w) for j, w in row if j >= i)
    mod = _singleton_modularity(own, resolution)
    # louvain_partitions copies the graph by add_weighted_edges_from(G.edges(...)): each node
    # then lists its neighbours in the order of that edge list.
    level = _Level(labels, _adjacency(len(labels), edges), [{u} for u in labels])
    m = sum(level.degrees) / 2  # graph.size(weight="weight")
    inner, _ = level.one_level(m, partition, resolution, rng)
    result: list[set[Any]] = []
    improvement = True  # as networkx: the first level is yielded whether or not a node moved
    while improvement:
        result = [s.copy() for s in partition]
        new_mod = level.modularity(inner, resolution)
        if new_mod - mod <= threshold:
            break
        mod = new_mod
        level = level.aggregate(inner)
        inner, improvement = level.one_level(m, partition, resolution, rng)
    return result


def _adjacency(size: int, edges: Sequence[tuple[int, int, Any]]) -> list[list[tuple[int, Any]]]:
    """Neighbour lists of a graph built by adding ``edges`` in order (new edges only)."""
    adj: list[list[tuple[int, Any]]] = [[] for _ in range(size)]
    for i, j, w in edges:
        adj[i].append((j, w))
        if j != i:
            adj[j].append((i, w))
    return adj


def _degree(row: list[tuple[int, Any]], node: int) -> Any:
    """``G.degree(node, weight=...)``: the weights in neighbour order, a self-loop twice."""
    total = sum(w for _, w in row)
    for j, w in row:
        if j == node:
            return total + w
    return total + False


def _singleton_modularity(adj: list[list[tuple[int, Any]]], resolution: float) -> Any:
    """``modularity(G, [{u} for u in G])``, as networkx sums it."""
    degrees = [_degree(row, i) for i, row in enumerate(adj)]
    deg_sum = sum(degrees)
    m = deg_sum / 2
    norm = 1 / deg_sum**2
    parts = []
    for i, row in enumerate(adj):
        inside = sum([w for j, w in row if j == i])
        out_degree_sum = sum([degrees[i]])
        parts.append(inside / m - resolution * out_degree_sum * out_degree_sum * norm)
    return sum(parts)


class _Level:
    """One level's graph: node labels (the original nodes, then community numbers), neighbour
    lists in networkx's order, and the original nodes each node stands for."""

    def __init__(
        self,
        labels: list[Hashable],
        adj: list[list[tuple[int, Any]]],
        members: list[set[Any]],
    ) -> None:
        self.labels = labels
        self.adj = adj
        self.members = members
        self.degrees = [_degree(row, i) for i, row in enumerate(adj)]
        self.node2com: list[int] = []

    def one_level(
        self, m: Any, partition: list[set[Any]], resolution: float, rng: Any
    ) -> tuple[list[set[Any]], bool]:
        """networkx's ``_one_level``: moves nodes between communities until none moves.

        Updates ``partition`` (sets of original nodes) in place, keeping its non-empty sets,
        and returns the level's communities (sets of labels) and whether a node moved.
        """
        labels, degrees = self.labels, self.degrees
        size = len(labels)
        node2com = list(range(size))
        inner: list[set[Any]] = [{u} for u in labels]
        stot = list(degrees)
        nbrs = [[(j, w) for j, w in row if j != i] for i, row in enumerate(self.adj)]
        order = list(range(size))
        rng.shuffle(order)
        two_m2 = 2 * m**2
        improvement = False
        moves = 1
        while moves > 0:
            moves = 0
            for u in order:
                best_mod: Any = 0
                best_com = current = node2com[u]
                weights2com: dict[int, Any] = {}
                get = weights2com.get
                for v, wt in nbrs[u]:
                    com = node2com[v]
                    weights2com[com] = get(com, 0.0) + wt
                degree = degrees[u]
                stot[best_com] -= degree
                staying = get(best_com)
                if staying is None:  # a defaultdict read: the key is added last
                    staying = weights2com[best_com] = 0.0
                remove_cost = -staying / m + resolution * (stot[best_com] * degree) / two_m2
                for nbr_com, wt in weights2com.items():
                    gain = remove_cost + wt / m - resolution * (stot[nbr_com] * degree) / two_m2
                    if gain > best_mod:
                        best_mod = gain
                        best_com = nbr_com
                stot[best_com] += degree
                if best_com != current:
                    com_nodes = self.members[u]
                    partition[current].difference_update(com_nodes)
                    inner[current].remove(labels[u])
                    partition[best_com].update(com_nodes)
                    inner[best_com].add(labels[u])
                    improvement = True
                    moves += 1
                    node2com[u] = best_com
        partition[:] = list(filter(len, partition))
        self.node2com = node2com
        return list(filter(len, inner)), improvement

    def modularity(self, communities: list[set[Any]], resolution: float) -> Any:
        """``modularity(G, communities, weight="weight", resolution=resolution)``."""
        degrees, adj = self.degrees, self.adj
        index = (
            {u: i for i, u in enumerate(self.labels)}
            if not isinstance(self.labels, range)
            else None
        )
        deg_sum = sum(degrees)
        m = deg_sum / 2
        norm = 1 / deg_sum**2
        parts = []
        for community in communities:
            comm = set(community)
            nodes = [index[u] for u in comm] if index is not None else list(comm)
            inside = set(nodes)
            passed: set[int] = set()
            weights = []
            for n in nodes:  # G.edges(comm): each edge once, from the first end iterated
                for j, w in adj[n]:
                    if j not in passed and j in inside:
                        weights.append(w)
                passed.add(n)
            l_c = sum(weights)
            out_degree_sum = sum([degrees[n] for n in nodes])
            parts.append(l_c / m - resolution * out_degree_sum * out_degree_sum * norm)
        return sum(parts)

    def aggregate(self, communities: list[set[Any]]) -> _Level:
        """networkx's ``_gen_graph``: one node per community, edge weights summed in edge
        order (a community's inner edges become its self-loop)."""
        node2com = self.node2com
        # The communities are the level's non-empty ones, in order: renumber them.
        renumber: dict[int, int] = {}
        for c in node2com:
            renumber.setdefault(c, 0)
        for new, old in enumerate(sorted(renumber)):
            renumber[old] = new
        com_of = [renumber[c] for c in node2com]
        members: list[set[Any]] = [set() for _ in communities]
        for i, part in enumerate(communities):
            for label in part:
                members[i].update(self.members[self._index(label)])
        weights: dict[tuple[int, int], Any] = {}
        order: list[tuple[int, int]] = []
        for i, row in enumerate(self.adj):
            ci = com_of[i]
            for j, w in row:
                if j < i:
                    continue  # passed from j's side
                cj = com_of[j]
                key = (ci, cj) if ci <= cj else (cj, ci)
                known = weights.get(key)
                if known is None:
                    weights[key] = w + 0
                    order.append((ci, cj))
                else:
                    weights[key] = w + known
        edges = [(a, b, weights[(a, b) if a <= b else (b, a)]) for a, b in order]
        size = len(communities)
        return _Level(range(size), _adjacency(size, edges), members)  # type: ignore[arg-type]

    def _index(self, label: Any) -> int:
        if isinstance(self.labels, range):
            return int(label)
        if not hasattr(self, "_label_index"):
            self._label_index = {u: i for i, u in enumerate(self.labels)}
        return self._label_index[label]
