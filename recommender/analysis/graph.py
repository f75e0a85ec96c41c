"""The communication graph: who talks to whom, as a networkx ``MultiDiGraph``.

One node per endpoint: a workload (``namespace/workload``, with its kind and the labels all its
observed pods share), an outside address (with its IETF/IANA address class from
:mod:`recommender.aggregate.addresses`; or, with ``external="class"``, one node per address class),
the node a flow was seen on or another node of the cluster, and cluster entities (kube-apiserver,
cilium-health, ...). One edge per (source, destination, verdict, protocol, port) with its
connections, bytes, rows, first and last seen and hour windows. Allowed edges are the evidence edges
of :func:`recommender.aggregate_edges` (never replies or ephemeral ports); denied edges are the
denied flows grouped the same way.

Node ids are deterministic strings (:func:`node_id`), nodes and edges are inserted in sorted
order, so the same flows give the same graph and the same files
(:mod:`recommender.report.graph_io`).

>>> from recommender import build_graph, write_graph              # doctest: +SKIP
>>> g = build_graph("sample_flows/flows.parquet")                 # doctest: +SKIP
>>> write_graph(g, "graph.html")                                  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import networkx as nx
import pyarrow as pa

from ..aggregate.addresses import classify_address, classify_network
from ..aggregate.edges import EdgeTables, aggregate_edges
from ..aggregate.selectors import common_labels
from ..config import RecommendConfig
from ..errors import ConfigError

__all__ = [
    "GRAPH_SCHEMA",
    "NODE_GROUP_ORDER",
    "NODE_KINDS",
    "build_graph",
    "edge_data",
    "graph_from_edges",
    "node_id",
    "pair_graph",
    "workload_graph",
]

#: Version of the graph's attribute schema (``graph.graph["schema"]``, see ``docs/graph.md``).
GRAPH_SCHEMA: Final = "recommender.graph/1"

#: Node kinds: the endpoint kinds of the canonical schema, plus ``external-class`` (all
#: outside addresses of one address class, with ``external="class"``).
NODE_KINDS: Final = (
    "workload",
    "cluster-entity",
    "host",
    "remote-node",
    "external",
    "external-class",
    "unknown",
)

#: Order of the non-namespace groups in drawings (namespaces come first).
NODE_GROUP_ORDER: Final = ("nodes", "cluster entities", "external", "unknown")

_PREFIX: Final = {
    "workload": "workload",
    "cluster-entity": "entity",
    "host": "host",
    "remote-node": "node",
    "external": "external",
    "external-class": "external-class",
    "unknown": "unknown",
}

#: Calico's names for outside peers it does not resolve to an address.
_CALICO_NETS: Final = {"pub": "public", "pvt": "private"}

PathLike = str | os.PathLike[str]


def node_id(kind: str, ident: str, namespace: str | None = None) -> str:
    """The graph's id of an endpoint.

    Parameters
    ----------
    kind
        One of :data:`NODE_KINDS` (an unknown kind is treated as ``unknown``).
    ident
        The endpoint's identity within its kind: the workload name, the address, the entity
        or address-class name.
    namespace
        The workload's namespace (workloads only; ``None`` is written as an empty namespace).

    Examples
    --------
    >>> node_id("workload", "cart", "shop")
    'workload:shop/cart'
    >>> node_id("external", "203.0.113.7")
    'external:203.0.113.7'
    """
    prefix = _PREFIX.get(kind, "unknown")
    if kind == "workload":
        return f"{prefix}:{namespace or ''}/{ident}"
    return f"{prefix}:{ident}"


def _address_class(ident: str, name: str | None = None) -> str:
    """The address class of an outside peer's address, network or Calico name."""
    for classify in (classify_address, classify_network):
        try:
            cls = classify(ident)
        except Exception:  # not an address: a name
            continue
        if cls:
            return cls
    for text in (name, ident):
        if text in _CALICO_NETS:
            return _CALICO_NETS[text]
    return "unknown"


def _matches(namespace: str | None, patterns: Sequence[str]) -> bool:
    return namespace is not None and any(fnmatch.fnmatchcase(namespace, p) for p in patterns)


class _Builder:
    """Collects nodes and merged edges, then inserts them into a graph in sorted order.

    Rows are tuples of :data:`_COLUMNS` (see :func:`_rows`): one end is ``row[0:5]``, the
    other ``row[5:10]`` (kind, namespace, id, name, workload kind).
    """

    def __init__(self, external: str) -> None:
        self.external = external
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.seen: dict[tuple[Any, ...], str] = {}

    def endpoint(self, end: tuple[Any, ...]) -> str:
        """The node id of one end (kind, namespace, id, name, workload kind), adding the node
        when new."""
        nid = self.seen.get(end)
        if nid is None or self.external == "class":
            nid = self.seen[end] = self._endpoint(*end)
        return nid

    def _endpoint(
        self, kind_value: Any, ns: Any, ident_value: Any, name: Any, wkind: Any
    ) -> str:
        kind = str(kind_value or "unknown")
        ident = str(ident_value or "?")
        attrs: dict[str, Any]
        if kind == "workload":
            nid = node_id(kind, ident, ns)
            attrs = {
                "kind": kind,
                "label": ident,
                "group": f"ns:{ns or ''}",
                "namespace": ns or "",
                "name": ident,
            }
            if wkind:
                attrs["workload_kind"] = str(wkind)
        elif kind == "external":
            cls = _address_class(ident, name)
            if self.external == "class":
                nid = node_id("external-class", cls)
                attrs = {"kind": "external-class", "label": cls, "address_class": cls}
                node = self.nodes.setdefault(nid, {**attrs, "group": "external", "addresses": []})
                node["addresses"].append(ident)
                return nid
            nid = node_id(kind, ident)
            attrs = {"kind": kind, "label": ident, "address_class": cls, "address": ident}
            if name and name != ident:
                attrs["name"] = str(name)
        elif kind in ("host", "remote-node"):
            nid = node_id(kind, ident)
            attrs = {"kind": kind, "label": ident, "address": ident}
            cls = _address_class(ident)
            if cls != "unknown":
                attrs["address_class"] = cls
            if name and name != ident:
                attrs["name"] = str(name)
        elif kind == "cluster-entity":
            nid = node_id(kind, ident)
            label = f"{name} ({ident})" if name and name != ident else ident
            attrs = {"kind": kind, "label": label, "name": str(name or ident)}
            cls = _address_class(ident)
            if cls != "unknown":
                attrs["address"], attrs["address_class"] = ident, cls
        else:
            nid = node_id("unknown", ident)
            attrs = {"kind": "unknown", "label": str(name or ident)}
        attrs.setdefault("group", _group(attrs))
        known = self.nodes.get(nid)
        if known is None:
            self.nodes[nid] = attrs
        else:
            for key, value in attrs.items():
                known.setdefault(key, value)
        return nid

    def add_rows(self, rows: Iterable[tuple[Any, ...]], verdict: str) -> None:
        """Merge edge rows (tuples of :data:`_COLUMNS`) into the edges."""
        endpoint, edges, seen = self.endpoint, self.edges, self.seen
        every_time = self.external == "class"  # class nodes collect each row's address
        for row in rows:
            src = None if every_time else seen.get(row[0:5])
            if src is None:
                src = endpoint(row[0:5])
            dst = None if every_time else seen.get(row[5:10])
            if dst is None:
                dst = endpoint(row[5:10])
            (
                protocol, port, connections, nbytes, nrows, windows, first, last,
                dns_names, src_ips, dst_ips, nodes, service,
            ) = row[10:]  # fmt: skip
            protocol = str(protocol or "?")
            key = f"{verdict} {protocol}/{'*' if port is None else port}"
            edge = edges.get((src, dst, key))
            if first is not None and type(first) is not int:
                first = _micros(first)
            if last is not None and type(last) is not int:
                last = _micros(last)
            if edge is None:
                edge = {"verdict": verdict, "protocol": protocol}
                if port is not None:
                    edge["port"] = int(port)
                edge.update(connections=0, bytes=0, rows=0, windows=0)
                edges[(src, dst, key)] = edge
            edge["connections"] += int(connections or 0)
            edge["bytes"] += int(nbytes or 0)
            edge["rows"] += int(nrows or 0)
            edge["windows"] = max(edge["windows"], int(windows or 0))
            if first is not None:
                edge["first_seen"] = min(edge.get("first_seen", first), first)
            if last is not None:
                edge["last_seen"] = max(edge.get("last_seen", last), last)
            if dns_names:
                _merge_list(edge, "dns_names", dns_names)
            if src_ips:
                _merge_list(edge, "src_ips", src_ips)
            if dst_ips:
                _merge_list(edge, "dst_ips", dst_ips)
            if nodes:
                _merge_list(edge, "nodes", nodes)
            if service:
                edge["service"] = str(service)

    def graph(self, attrs: dict[str, Any]) -> nx.MultiDiGraph:
        g = nx.MultiDiGraph(**attrs)
        nodes = self.nodes
        for nid in sorted(nodes):
            node = nodes[nid]
            if "addresses" in node:
                node["addresses"] = sorted(set(node["addresses"]))
        g.add_nodes_from((nid, nodes[nid]) for nid in sorted(nodes))
        for edge in self.edges.values():
            for attr in ("first_seen", "last_seen"):
                if attr in edge:
                    edge[attr] = _iso(edge[attr])
        g.add_edges_from((s, d, k, self.edges[(s, d, k)]) for s, d, k in sorted(self.edges))
        return g


def _merge_list(edge: dict[str, Any], attr: str, values: Iterable[Any]) -> None:
    """``edge[attr]``: the sorted union of the values so far and ``values``."""
    known = edge.get(attr)
    edge[attr] = sorted(set(known) | set(values)) if known else sorted(values)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: Any) -> int | None:
    """A time as microseconds since the epoch (Arrow gives ints, report rows ISO text)."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        micros: int = (value - _EPOCH) // timedelta(microseconds=1)
        return micros
    return None


def _iso(micros: int) -> str:
    """``(_EPOCH + timedelta(microseconds=micros)).isoformat()``, from the day's date text
    (remembered) and the time of day by arithmetic: 2.5x faster, one call per edge end."""
    seconds, fraction = divmod(micros, 1_000_000)
    day, of_day = divmod(seconds, 86_400)
    date = _DATES.get(day)
    if date is None:
        date = _DATES[day] = (_EPOCH + timedelta(days=day)).date().isoformat()
    hours, rest = divmod(of_day, 3600)
    minutes, secs = divmod(rest, 60)
    if fraction:
        return f"{date}T{hours:02d}:{minutes:02d}:{secs:02d}.{fraction:06d}+00:00"
    return f"{date}T{hours:02d}:{minutes:02d}:{secs:02d}+00:00"


#: Date texts of :func:`_iso`, by days since the epoch.
_DATES: dict[int, str] = {}


def _group(attrs: Mapping[str, Any]) -> str:
    kind = attrs["kind"]
    if kind in ("host", "remote-node"):
        return "nodes"
    if kind == "cluster-entity":
        return "cluster entities"
    if kind in ("external", "external-class"):
        return f"external:{attrs.get('address_class', 'unknown')}"
    return "unknown"


_COLUMNS: Final = (
    *(f"{side}_{c}" for side in ("src", "dst")
      for c in ("kind", "namespace", "id", "name", "workload_kind")),
    "protocol", "dst_port", "connections", "bytes", "rows", "windows", "first_seen",
    "last_seen", "dns_names", "src_ips", "dst_ips", "nodes", "dst_service",
)  # fmt: skip


def _rows(
    table: pa.Table | Sequence[Mapping[str, Any]] | None,
) -> Iterable[tuple[Any, ...]]:
    """Rows as tuples of :data:`_COLUMNS` (None where a column is absent); times as
    microseconds (fast to convert)."""
    if table is None:
        return []
    if not isinstance(table, pa.Table):
        return [tuple(r.get(c) for c in _COLUMNS) for r in table]
    columns: list[Any] = []
    for name in _COLUMNS:
        if name not in table.column_names:
            columns.append(itertools.repeat(None, table.num_rows))
            continue
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        columns.append(column.to_pylist())
    return zip(*columns, strict=False)


def _labels(workload_labels: pa.Table | None) -> dict[tuple[str, str], dict[str, str]]:
    """The labels every observed pod of each workload shares."""
    if workload_labels is None or workload_labels.num_rows == 0:
        return {}
    column = workload_labels.column("labels")
    if not pa.types.is_map(column.type):  # pragma: no cover - the aggregation writes maps
        return _labels_of_rows(workload_labels.to_pylist())
    from ..aggregate.label_maps import label_rows

    # The maps as the aggregation handed them over (converted at most once per table, equal
    # maps shared: recommender.aggregate.label_maps). Pods of one workload mostly carry the
    # same labels, so each distinct set is compared once.
    maps: dict[tuple[str, str], dict[tuple[tuple[str, str], ...], None]] = {}
    for namespace, workload, pairs in label_rows(workload_labels):
        if pairs is None:
            continue
        maps.setdefault((namespace or "", workload), {})[pairs] = None
    return {key: common_labels(dict(p) for p in sets) for key, sets in maps.items()}


def _labels_of_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    """:func:`_labels` of rows as dicts (labels a dict or a list of pairs)."""
    maps: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        labels = row["labels"]
        if labels is None:
            continue
        maps.setdefault((row["namespace"] or "", row["workload"]), []).append(
            dict(labels) if not isinstance(labels, dict) else labels
        )
    return {key: common_labels(sets) for key, sets in maps.items()}


def graph_from_edges(
    edges: pa.Table | Sequence[Mapping[str, Any]] | None,
    denied: pa.Table | Sequence[Mapping[str, Any]] | None = None,
    workload_labels: pa.Table | None = None,
    *,
    namespaces: Sequence[str] = (),
    exclude_namespaces: Sequence[str] = (),
    external: Literal["address", "class"] = "address",
    graph_attrs: Mapping[str, Any] | None = None,
) -> nx.MultiDiGraph:
    """Build the communication graph from edge rows (the columns of :class:`EdgeTables`).

    Parameters
    ----------
    edges
        Allowed (evidence) edges: ``EdgeTables.edges``, or the same as a list of dicts.
    denied
        Denied edges (``EdgeTables.denied``, or ``report["denied"]``); drawn, never allowed.
    workload_labels
        ``EdgeTables.workload_labels``: each workload node gets the labels its pods share.
    namespaces, exclude_namespaces
        Shell patterns: keep only the edges with at least one workload end in a matching (and
        not excluded) namespace, with their peers. Empty: every namespace.
    external
        ``"address"``: one node per outside address; ``"class"``: one per address class.
    graph_attrs
        Extra graph-level attributes.

    Returns
    -------
    networkx.MultiDiGraph
        See the module docstring and ``docs/graph.md`` for the attributes.
    """
    if external not in ("address", "class"):
        raise ConfigError(f"external must be 'address' or 'class', not {external!r}.")
    builder = _Builder(external)
    labels = _labels(workload_labels)

    def wanted(row: tuple[Any, ...]) -> bool:
        for kind, ns in ((row[0], row[1]), (row[5], row[6])):  # src, dst kind and namespace
            if kind != "workload":
                continue
            if namespaces and not _matches(ns, namespaces):
                continue
            if _matches(ns, exclude_namespaces):
                continue
            return True
        return False

    for verdict, table in (("allowed", edges), ("denied", denied)):
        rows = _rows(table)
        if namespaces or exclude_namespaces:
            rows = filter(wanted, rows)
        builder.add_rows(rows, verdict)
    for attrs in builder.nodes.values():
        if attrs["kind"] == "workload":
            common = labels.get((attrs["namespace"], attrs["name"]), {})
            attrs["labels"] = dict(sorted(common.items()))
    return builder.graph({"schema": GRAPH_SCHEMA, **dict(graph_attrs or {})})


def build_graph(
    flows: EdgeTables | pa.Table | PathLike | Iterable[PathLike],
    config: RecommendConfig | None = None,
    *,
    format: str | None = None,
    workers: int | None = None,
    namespaces: Sequence[str] | None = None,
    exclude_namespaces: Sequence[str] = (),
    external: Literal["address", "class"] = "address",
) -> nx.MultiDiGraph:
    """Build the communication graph of flows.

    Parameters
    ----------
    flows
        :class:`~recommender.EdgeTables` (from :func:`~recommender.aggregate_edges`), a
        canonical flow table, or flow files, folders or glob patterns of any supported format.
    config
        Options of the aggregation: ``since``/``until``, ``min_connections``,
        ``max_ephemeral_ports``; ``namespaces`` is the default of ``namespaces`` below. The
        default ``exclude_namespaces`` of a config (system namespaces) is not applied: the
        cluster's DNS and API server are peers worth seeing.
    format, workers
        As in :func:`recommender.read_flows` when ``flows`` are paths.
    namespaces, exclude_namespaces
        Shell patterns: keep only edges with a workload end in these namespaces (and their
        peers). ``None``: ``config.namespaces``; empty: every namespace.
    external
        ``"address"``: one node per outside address (with its ``address_class``);
        ``"class"``: one node per address class (``addresses`` lists the members).

    Returns
    -------
    networkx.MultiDiGraph
        Deterministic node ids (:func:`node_id`) and order; see ``docs/graph.md``.

    Examples
    --------
    >>> g = build_graph("sample_flows/flows.parquet")                 # doctest: +SKIP
    >>> g.nodes["workload:shop/cart"]["labels"]                       # doctest: +SKIP
    {'app': 'cart'}
    """
    config = config or RecommendConfig()
    if not isinstance(config, RecommendConfig):
        raise ConfigError("config must be a RecommendConfig.")
    if isinstance(flows, EdgeTables):
        tables = flows
    elif isinstance(flows, pa.Table):
        tables = aggregate_edges(flows, config)
    else:  # streamed through the input checks: copies counted once, the window of --last
        from ..aggregate.checked import aggregate_flow_files

        tables = aggregate_flow_files(flows, config, format, workers=workers)[0]
    attrs: dict[str, Any] = {"rows_used": tables.rows_used}
    if tables.first_seen is not None:
        attrs["first_seen"] = tables.first_seen.isoformat()
    if tables.last_seen is not None:
        attrs["last_seen"] = tables.last_seen.isoformat()
    return graph_from_edges(
        tables.edges,
        tables.denied,
        tables.workload_labels,
        namespaces=tuple(config.namespaces if namespaces is None else namespaces),
        exclude_namespaces=tuple(exclude_namespaces),
        external=external,
        graph_attrs=attrs,
    )


def pair_graph(graph: nx.MultiDiGraph, verdict: str | None = None) -> nx.DiGraph:
    """One edge per (source, destination) pair: ``connections``, ``bytes``, ``ports``
    (sorted ``PROTO/port`` strings) and ``edges`` (how many port edges were merged).

    Parameters
    ----------
    graph
        A graph from :func:`build_graph`.
    verdict
        ``"allowed"`` or ``"denied"`` to keep only those edges; None keeps both (a pair is
        ``denied`` only when every one of its edges is).
    """
    out = nx.DiGraph(**graph.graph)
    out.add_nodes_from(graph.nodes(data=True))
    for src, dst, data in graph.edges(data=True):
        if verdict is not None and data["verdict"] != verdict:
            continue
        port = data.get("port")
        text = f"{data['protocol']}/{'*' if port is None else port}"
        if out.has_edge(src, dst):
            e = out.edges[src, dst]
            e["connections"] += data["connections"]
            e["bytes"] += data["bytes"]
            e["edges"] += 1
            e["ports"] = sorted(set(e["ports"]) | {text})
            e["denied"] = e["denied"] and data["verdict"] == "denied"
        else:
            out.add_edge(
                src,
                dst,
                connections=data["connections"],
                bytes=data["bytes"],
                edges=1,
                ports=[text],
                denied=data["verdict"] == "denied",
            )
    return out


def workload_graph(graph: nx.MultiDiGraph, *, include: Iterable[str] = ("workload",)) -> nx.Graph:
    """The undirected, weighted graph of allowed traffic between nodes of the given kinds.

    The weight of a pair is the number of distinct (direction, protocol, port) edges between
    them plus ``log10(1 + connections)`` of each, so that a pair talking on several ports binds
    more than one chatty port, and volume counts without dominating. Self-loops are dropped.
    Used by :func:`recommender.analysis.segments.propose_segments`.
    """
    import math

    kinds = set(include)
    out = nx.Graph()
    out.add_nodes_from(
        (n, d) for n, d in graph.nodes(data=True) if d.get("kind") in kinds
    )
    kept = set(out)
    # Pairs summed in edge order, then added in the order each first appeared: the same
    # graph as adding edge by edge (a Graph keeps the order its edges were first added).
    pairs: dict[tuple[Any, Any], dict[str, Any]] = {}
    log10 = math.log10
    for src, dst, data in edge_data(graph):
        if data["verdict"] != "allowed" or src == dst or src not in kept or dst not in kept:
            continue
        w = 1.0 + log10(1 + data["connections"])
        pair = pairs.get((src, dst)) or pairs.get((dst, src))
        if pair is not None:
            pair["weight"] += w
            pair["connections"] += data["connections"]
        else:
            pairs[(src, dst)] = {"weight": w, "connections": data["connections"]}
    out.add_edges_from((src, dst, pair) for (src, dst), pair in pairs.items())
    return out


def edge_data(graph: nx.Graph) -> Iterable[tuple[Any, Any, dict[str, Any]]]:
    """``graph.edges(data=True)``, in the same order, read from the adjacency directly."""
    if not (graph.is_multigraph() and graph.is_directed()):
        return graph.edges(data=True)  # type: ignore[no-any-return]
    return (
        (src, dst, data)
        for src, nbrs in graph.adjacency()
        for dst, keyed in nbrs.items()
        for data in keyed.values()
    )
