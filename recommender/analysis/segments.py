"""Security domains from the communication graph: community detection proposes segments.

Workloads that talk mostly among themselves form a community of the graph of allowed traffic
(:func:`recommender.analysis.graph.workload_graph`: undirected, weighted by distinct port edges and
the log of their connections). :func:`propose_segments` finds the communities with networkx's
Louvain method (seeded, so reproducible) or greedy modularity, names each one after its main
namespace, and reports for each:

* its members, each with a *cohesion*: the share of the member's traffic weight with other
  workloads that stays in the segment, traffic with shared services aside (1.0: it talks only
  inside; low: a bridge that could belong elsewhere);
* the edges that bind it (its heaviest internal edges: the reasons for the grouping);
* the flows a boundary around it would have to allow (every allowed edge that crosses from one
  segment to another, outside peers grouped by address class): what a guardrail policy in a
  tier above the per-workload policies must let through.

Workloads talking to a large share of all others (DNS, monitoring) are *shared services*:
attaching one to any single community would be arbitrary, so they form their own segment.

The proposal is advice: nothing is emitted as a policy. ``segment=<name>`` labels are the
suggested way to mark the members (``SegmentProposal.labels``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import networkx as nx

from ..errors import ConfigError
from ..policy._names import safe_name
from .graph import edge_data, workload_graph
from .louvain import louvain_communities

__all__ = ["METHODS", "CrossSegmentFlow", "Segment", "SegmentProposal", "propose_segments"]

#: Community detection methods of :func:`propose_segments`.
METHODS: Final = ("louvain", "greedy")

#: Label key proposed for the members of a segment.
SEGMENT_LABEL: Final = "segment"

SHARED: Final = "shared-services"


@dataclass(frozen=True)
class Segment:
    """One proposed segment.

    Attributes
    ----------
    name
        A DNS-1123 label, derived from the main namespace (``shop``, ``shop-2``, ...).
    members
        Node ids of the member workloads, sorted.
    namespaces
        Namespaces of the members, sorted.
    cohesion
        Per member: the share of its traffic weight with other workloads that stays inside the
        segment; for members of ordinary segments, traffic with shared services is left aside.
    internal_weight, boundary_weight
        Traffic weight inside the segment, and to or from other segments (shared services
        aside, as for ``cohesion``).
    binding_edges
        The heaviest internal edges: ``(source, destination, ports, connections)``.
    shared
        True for the shared-services segment.
    """

    name: str
    members: tuple[str, ...]
    namespaces: tuple[str, ...]
    cohesion: Mapping[str, float]
    internal_weight: float
    boundary_weight: float
    binding_edges: tuple[tuple[str, str, tuple[str, ...], int], ...]
    shared: bool = False

    @property
    def reason(self) -> str:
        """One sentence on why these workloads go together."""
        if self.shared:
            return (
                f"{len(self.members)} "
                f"{'workload talks' if len(self.members) == 1 else 'workloads talk'} with "
                "workloads of many namespaces "
                "(shared services such as DNS or monitoring); kept apart instead of joining "
                "one community."
            )
        total = self.internal_weight + self.boundary_weight
        share = self.internal_weight / total if total else 1.0
        if not total:
            return "No allowed traffic with other workloads."
        if len(self.members) == 1:
            return "A workload with no stronger tie to any group."
        top = ", ".join(
            f"{_short(s)} \u2192 {_short(d)} {'/'.join(p)}" for s, d, p, _ in self.binding_edges[:3]
        )
        return (
            f"{share:.0%} of the members' traffic with other workloads (shared services aside) "
            f"stays inside; bound by {top}."
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "members": list(self.members),
            "namespaces": list(self.namespaces),
            "cohesion": {k: round(v, 4) for k, v in sorted(self.cohesion.items())},
            "internal_weight": round(self.internal_weight, 4),
            "boundary_weight": round(self.boundary_weight, 4),
            "binding_edges": [
                {"source": s, "destination": d, "ports": list(p), "connections": c}
                for s, d, p, c in self.binding_edges
            ],
            "shared": self.shared,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class CrossSegmentFlow:
    """Allowed traffic across a segment boundary, grouped by segment pair and port.

    ``source_segment``/``destination_segment`` are segment names, or for peers that are not
    workloads their group (``external:public``, ``nodes``, ``cluster entities``).
    """

    source_segment: str
    destination_segment: str
    protocol: str
    port: int | None
    connections: int
    edges: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "source_segment": self.source_segment,
            "destination_segment": self.destination_segment,
            "protocol": self.protocol,
            "port": self.port,
            "connections": self.connections,
            "edges": [list(e) for e in self.edges],
        }


@dataclass(frozen=True)
class SegmentProposal:
    """The result of :func:`propose_segments`.

    Attributes
    ----------
    segments
        The segments, largest first (shared services last).
    modularity
        Modularity (at resolution 1, whatever resolution found the communities) of the
        partition of the workload graph without the shared services (-0.5..1; above about 0.3
        the graph has clear communities).
    cross_segment
        The flows each boundary would have to allow.
    method, resolution, seed
        How the communities were found.
    """

    segments: tuple[Segment, ...]
    modularity: float
    cross_segment: tuple[CrossSegmentFlow, ...]
    method: str
    resolution: float
    seed: int | None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def assignments(self) -> dict[str, str]:
        """Segment name of every member workload (node id -> name)."""
        return {m: s.name for s in self.segments for m in s.members}

    @property
    def labels(self) -> dict[str, dict[str, str]]:
        """The proposed label of every member: node id -> ``{"segment": name}``."""
        return {m: {SEGMENT_LABEL: name} for m, name in sorted(self.assignments.items())}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the report's ``segments`` section)."""
        return {
            "method": self.method,
            "resolution": self.resolution,
            "seed": self.seed,
            "modularity": round(self.modularity, 4),
            "label_key": SEGMENT_LABEL,
            "segments": [s.to_dict() for s in self.segments],
            "cross_segment": [f.to_dict() for f in self.cross_segment],
            **dict(self.params),
        }


def _short(node: str) -> str:
    return node.split(":", 1)[-1]


def _communities(
    g: nx.Graph, method: str, resolution: float, seed: int | None
) -> list[set[str]]:
    if g.number_of_edges() == 0:
        return [{n} for n in g.nodes]
    if method == "louvain":  # networkx's steps on plain lists: the same communities, faster
        return [set(c) for c in louvain_communities(
            g, weight="weight", resolution=resolution, seed=seed
        )]  # fmt: skip
    return [set(c) for c in nx.community.greedy_modularity_communities(
        g, weight="weight", resolution=resolution
    )]  # fmt: skip


def _without(g: nx.Graph, drop: set[str]) -> nx.Graph:
    """``g.subgraph(nodes not in drop).copy()`` without the filtered views: the same nodes and
    edges in the same order (the order Louvain's result depends on), at a fraction of the cost.
    """
    out = nx.Graph()
    out.graph.update(g.graph)
    out.add_nodes_from((n, d.copy()) for n, d in g.nodes(data=True) if n not in drop)
    out.add_edges_from(
        (u, v, d.copy())
        for u, nbrs in g.adjacency()
        if u not in drop
        for v, d in nbrs.items()
        if v not in drop
    )
    return out


def _shared_services(
    full: nx.Graph, graph: nx.MultiDiGraph, fraction: float, min_namespaces: int
) -> list[str]:
    """Workloads whose peers span many other namespaces (see :func:`propose_segments`).

    Peeled one at a time, widest first: once the cluster DNS is set apart, a workload that
    looked widespread only because it and its peers all use DNS no longer does.
    """
    if fraction >= 1:
        return []
    ns = {n: str(graph.nodes[n].get("namespace", "")) for n in full.nodes}
    others = len(set(ns.values())) - 1
    spread = {n: Counter(ns[p] for p in full.neighbors(n) if ns[p] != ns[n]) for n in full.nodes}
    shared: list[str] = []
    while spread:
        best = min(spread, key=lambda n: (-len(spread[n]), n))
        width = len(spread[best])
        if width < min_namespaces or width <= fraction * others:
            break
        shared.append(best)
        del spread[best]
        for p in full.neighbors(best):
            if p in spread and ns[p] != ns[best]:
                spread[p][ns[best]] -= 1
                if not spread[p][ns[best]]:
                    del spread[p][ns[best]]
    return sorted(shared)


def _name(members: list[str], graph: nx.MultiDiGraph, taken: Counter[str]) -> str:
    namespaces = Counter(str(graph.nodes[m].get("namespace", "")) for m in members)
    base = sorted(namespaces.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] or "segment"
    base = safe_name(base, 56)
    taken[base] += 1
    return base if taken[base] == 1 else f"{base}-{taken[base]}"


def propose_segments(
    graph: nx.MultiDiGraph,
    *,
    method: Literal["louvain", "greedy"] = "louvain",
    resolution: float = 1.0,
    seed: int | None = 0,
    shared_fraction: float = 0.5,
    shared_min_namespaces: int = 2,
    binding_edges: int = 5,
) -> SegmentProposal:
    """Propose security segments of the workloads by community detection on the graph.

    Parameters
    ----------
    graph
        A graph from :func:`recommender.build_graph`. Only allowed traffic between workloads
        counts; outside peers appear in the cross-segment flows only.
    method
        ``"louvain"`` (networkx ``louvain_communities``, seeded) or ``"greedy"`` (Clauset-
        Newman-Moore greedy modularity, deterministic without a seed).
    resolution
        Above 1: more, smaller segments; below 1: fewer, larger ones.
    seed
        Random seed of the Louvain method.
    shared_fraction, shared_min_namespaces
        A workload with allowed traffic to or from workloads of at least
        ``shared_min_namespaces`` other namespaces, and of more than ``shared_fraction`` of all
        other namespaces, is a shared service (cluster DNS, a metrics scraper); 1.0 turns shared
        services off.
    binding_edges
        How many of its heaviest internal edges each segment lists as its reasons.

    Returns
    -------
    SegmentProposal

    Examples
    --------
    >>> from recommender import build_graph, propose_segments         # doctest: +SKIP
    >>> proposal = propose_segments(build_graph("sample_flows/flows.parquet"))  # doctest: +SKIP
    >>> proposal.labels["workload:shop/cart"]                         # doctest: +SKIP
    {'segment': 'shop'}
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, not {method!r}.")
    if not resolution > 0:
        raise ConfigError(f"resolution must be positive, not {resolution!r}.")
    if not 0 < shared_fraction <= 1:
        raise ConfigError(f"shared_fraction must be in (0, 1], not {shared_fraction!r}.")
    full = workload_graph(graph)
    shared = _shared_services(full, graph, shared_fraction, shared_min_namespaces)
    core = _without(full, set(shared))
    found = _communities(core, method, resolution, seed)
    found.sort(key=lambda c: (-len(c), sorted(c)[0]))
    partition = [c for c in found if c]
    modularity = (
        nx.community.modularity(core, partition, weight="weight")
        if core.number_of_edges()
        else 0.0
    )
    taken: Counter[str] = Counter()
    groups: list[tuple[str, list[str], bool]] = [
        (_name(sorted(c), graph, taken), sorted(c), False) for c in partition
    ]
    if shared:
        groups.append((SHARED if SHARED not in taken else f"{SHARED}-x", shared, True))
    segment_of = {m: name for name, members, _ in groups for m in members}

    # Weight inside and across, per member, from the full workload graph.
    inside: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    aside = set(shared)
    for a, b, w in full.edges(data="weight"):
        for n, other in ((a, b), (b, a)):
            if other in aside and n not in aside:
                continue  # everyone uses DNS: a member's tie to shared services says nothing
            total[n] += w
            if segment_of[a] == segment_of[b]:
                inside[n] += w
    # Internal edges and cross-segment flows, from the directed multigraph.
    internal: dict[str, dict[tuple[str, str], list[Any]]] = defaultdict(dict)
    cross: dict[tuple[str, str, str, int | None], list[Any]] = {}
    for src, dst, data in edge_data(graph):  # graph.edges(data=True), read directly
        if data["verdict"] != "allowed" or src == dst:
            continue
        s_seg = segment_of.get(src) or str(graph.nodes[src].get("group", "unknown"))
        d_seg = segment_of.get(dst) or str(graph.nodes[dst].get("group", "unknown"))
        port = data.get("port")
        if s_seg == d_seg:
            if src in segment_of:
                entry = internal[s_seg].setdefault((src, dst), [set(), 0])
                entry[0].add(f"{data['protocol']}/{'*' if port is None else port}")
                entry[1] += data["connections"]
            continue
        if src not in segment_of and dst not in segment_of:
            continue  # outside to outside: not a boundary of any segment
        key = (s_seg, d_seg, str(data["protocol"]), port)
        item = cross.setdefault(key, [0, set()])
        item[0] += data["connections"]
        item[1].add((src, dst))
    segments = []
    for name, members, is_shared in groups:
        binding = sorted(
            ((s, d, tuple(sorted(v[0])), v[1]) for (s, d), v in internal[name].items()),
            key=lambda e: (-len(e[2]), -e[3], e[0], e[1]),
        )[:binding_edges]
        in_w = sum(inside[m] for m in members) / 2
        all_w = sum(total[m] for m in members)
        segments.append(
            Segment(
                name=name,
                members=tuple(members),
                namespaces=tuple(sorted({str(graph.nodes[m].get("namespace")) for m in members})),
                cohesion={m: (inside[m] / total[m] if total[m] else 1.0) for m in members},
                internal_weight=in_w,
                boundary_weight=max(all_w - 2 * in_w, 0.0),
                binding_edges=tuple(binding),
                shared=is_shared,
            )
        )
    flows = tuple(
        CrossSegmentFlow(s, d, proto, port, conns, tuple(sorted(pairs)))
        for (s, d, proto, port), (conns, pairs) in sorted(
            cross.items(), key=lambda kv: (*kv[0][:3], -1 if kv[0][3] is None else kv[0][3])
        )
    )
    if math.isnan(modularity):
        modularity = 0.0
    return SegmentProposal(
        segments=tuple(segments),
        modularity=float(modularity),
        cross_segment=flows,
        method=method,
        resolution=float(resolution),
        seed=seed,
        params={"shared_fraction": shared_fraction, "shared_min_namespaces": shared_min_namespaces},
    )
