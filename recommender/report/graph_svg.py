"""Drawing the communication graph as SVG, with a deterministic layout grouped by namespace.

The layout is a grid, not a force simulation: every namespace starts a column of workloads
(sorted by name), a column holds at most ``max(16, sqrt(2n))`` nodes and continues in the next
one, and the outside groups (nodes, cluster entities, address classes) follow in shared columns.
A column is as wide as its longest label (up to 48 characters; longer ones end in an ellipsis),
so no two boxes overlap. This static picture is the one beside ``report.md`` (``graph.svg``) and
in ``report.html``; the interactive page (:mod:`recommender.report.graph_html`) is laid out by a
layout library in the browser instead. Its cost is O(n log n) for sorting, so 10,000 workloads
draw in about a second (see ``docs/performance.md``). An outside group with many members is
drawn as one node, and ``max_nodes`` keeps the busiest nodes of a larger graph.

Every text is XML-escaped and stripped of characters XML cannot hold (flow data is attacker-
influenced), and the same graph gives the same bytes.
"""

from __future__ import annotations

import html
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import networkx as nx

from ..analysis.graph import NODE_GROUP_ORDER, edge_data

__all__ = ["GraphLayout", "drawn_graph", "layout_graph", "render_svg", "xml_text"]

COL_W: Final = 215
NODE_W: Final = 160
NODE_H: Final = 24
ROW_H: Final = 34
TOP: Final = 48
LEFT: Final = 16
#: An outside group with more members than this is drawn as one node.
GROUP_COLLAPSE: Final = 12
_LABEL_CHARS: Final = 48

_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")

#: Fill and stroke of a node by kind.
COLORS: Final = {
    "workload": ("#ddf4ff", "#54aeff"),
    "external": ("#fff1e5", "#fb8f44"),
    "nodes": ("#eaeef2", "#8c959f"),
    "cluster entities": ("#fbefff", "#c297ff"),
}


def xml_text(value: Any) -> str:
    """Escaped text for XML/HTML element content and quoted attributes."""
    return html.escape(_UNSAFE.sub("\ufffd", str(value)), quote=True)


def _text_width(text: str) -> int:
    """The width of a box holding ``text`` at 12 px (7 px a character, with margins)."""
    return 7 * len(text) + 16


def _short(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "\u2026"


@dataclass(frozen=True)
class GraphLayout:
    """Where each drawn node is.

    Attributes
    ----------
    nodes
        The drawn nodes and their attributes (big outside groups collapsed into one node, capped
        to the busiest nodes).
    edges
        One per drawn (source, destination, verdict) with ``ports``, ``connections``, ``bytes``,
        ``edges`` (port edges merged) and ``denied``.
    position
        Top-left corner of each node's box.
    column
        Column index of each node.
    headers
        ``(x, baseline, text)`` of each group's header.
    width, height
        Size of the drawing.
    hidden
        Nodes of the input left out by the cap.
    widths
        Width of each node's box (its column's: as wide as the column's longest label).
    """

    nodes: dict[str, dict[str, Any]]
    edges: dict[tuple[str, str, str], dict[str, Any]]
    position: dict[str, tuple[int, int]]
    column: dict[str, int]
    headers: list[tuple[int, int, str]]
    width: int
    height: int
    hidden: int
    widths: dict[str, int] = field(default_factory=dict)


def _display_group(data: dict[str, Any]) -> str:
    group = str(data.get("group", "unknown"))
    if group.startswith("ns:"):
        return group[3:]
    return group.replace(":", ": ", 1)  # external: public


def _group_key(group: str, in_scope: set[str]) -> tuple[int, int, str]:
    if group.startswith("ns:"):
        return (0, 0 if group[3:] in in_scope else 1, group)
    head = group.split(":", 1)[0]
    rank = NODE_GROUP_ORDER.index(head) if head in NODE_GROUP_ORDER else len(NODE_GROUP_ORDER)
    return (1, rank, group)


_Pairs = dict[tuple[str, str, str], dict[str, Any]]


def _pairs(graph: nx.MultiDiGraph, node_of: dict[str, str]) -> _Pairs:
    """One entry per drawn (source, destination, verdict): allowed and denied traffic of one
    pair are drawn as two lines. ``node_of`` maps collapsed nodes to their group node."""
    out: _Pairs = {}
    for src, dst, data in edge_data(graph):  # graph.edges(data=True), read directly
        verdict = str(data.get("verdict", "allowed"))
        key = (node_of.get(src, src), node_of.get(dst, dst), verdict)
        port = data.get("port")
        own = f"{data.get('protocol', '?')}/{'*' if port is None else port}"
        texts = data.get("ports") or [own]
        e = out.get(key)
        if e is None:
            out[key] = {
                "connections": int(data.get("connections", 0)),
                "bytes": int(data.get("bytes", 0)),
                "edges": 1,
                "ports": set(texts),
                "denied": verdict == "denied",
            }
        else:
            e["connections"] += int(data.get("connections", 0))
            e["bytes"] += int(data.get("bytes", 0))
            e["edges"] += 1
            e["ports"].update(texts)
    for e in out.values():
        e["ports"] = sorted(e["ports"])
    return out


def _collapsed(
    graph: nx.MultiDiGraph, collapse: int
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The drawn nodes (big outside groups as one node) and the map of collapsed nodes."""
    members: dict[str, list[str]] = defaultdict(list)
    for n, group in graph.nodes(data="group", default="unknown"):
        members[str(group)].append(n)
    nodes: dict[str, dict[str, Any]] = {}
    node_of: dict[str, str] = {}
    for group in sorted(members):
        group_nodes = members[group]
        if not group.startswith("ns:") and len(group_nodes) > collapse:
            gid = f"group:{group}"
            for n in group_nodes:
                node_of[n] = gid
            kind = graph.nodes[group_nodes[0]].get("kind", "unknown")
            nodes[gid] = {"kind": kind, "group": group, "label": f"{len(group_nodes)} addresses",
                          "members": len(group_nodes)}  # fmt: skip
        else:
            for n in group_nodes:
                nodes[n] = graph.nodes[n]
    return nodes, node_of


def drawn_graph(
    graph: nx.MultiDiGraph, *, max_nodes: int | None = None, collapse: int = GROUP_COLLAPSE
) -> tuple[dict[str, dict[str, Any]], _Pairs, int]:
    """What a drawing shows, whatever lays it out: the nodes (outside groups with more than
    ``collapse`` members as one node; at most ``max_nodes``, the busiest), one edge per drawn
    (source, destination, verdict), and how many nodes the cap left out."""
    nodes, node_of = _collapsed(graph, collapse)
    pairs = _pairs(graph, node_of)
    hidden = 0
    if max_nodes is not None and len(nodes) > max_nodes:
        weight: dict[str, int] = defaultdict(int)
        for (src, dst, _), data in pairs.items():
            weight[src] += data["connections"] + 1
            weight[dst] += data["connections"] + 1
        keep = set(sorted(nodes, key=lambda n: (-weight[n], n))[: max(max_nodes, 0)])
        hidden = len(nodes) - len(keep)
        nodes = {n: d for n, d in nodes.items() if n in keep}
        pairs = {k: d for k, d in pairs.items() if k[0] in keep and k[1] in keep}
    return nodes, pairs, hidden


def layout_graph(
    graph: nx.MultiDiGraph,
    *,
    max_nodes: int | None = None,
    in_scope: Iterable[str] = (),
    collapse: int = GROUP_COLLAPSE,
) -> GraphLayout:
    """Lay out a communication graph on the grid described in the module docstring.

    Parameters
    ----------
    graph
        A graph from :func:`~recommender.build_graph`.
    max_nodes
        Draw at most this many nodes, the busiest (most connections, then id); None: all.
    in_scope
        Namespaces drawn first (the rest of the namespaces follow, in name order).
    collapse
        Outside groups with more members are drawn as one node.
    """
    nodes, pairs, hidden = drawn_graph(graph, max_nodes=max_nodes, collapse=collapse)
    scope = set(in_scope)
    n = len(nodes)
    per_col = max(16, math.isqrt(2 * n) + 1)
    by_group: dict[str, list[str]] = defaultdict(list)
    for node, data in nodes.items():
        by_group[str(data.get("group", "unknown"))].append(node)
    cell: dict[str, tuple[int, int]] = {}
    header_cells: list[tuple[int, int, str]] = []  # (column, row, text); row -1: above the top
    col, row, tallest = -1, 0, 0
    outside_started = False
    for group in sorted(by_group, key=lambda g: _group_key(g, scope)):
        outside = not group.startswith("ns:")
        members = sorted(by_group[group], key=lambda m: (str(nodes[m].get("label", m)), m))
        first = nodes[members[0]]
        if not outside or not outside_started or row + 2 > per_col:
            col, row = col + 1, 0
            outside_started = outside_started or outside
        if row:  # a further block in a shared column: its header takes a row
            header_cells.append((col, row, _display_group(first)))
            row += 1
        else:
            header_cells.append((col, -1, _display_group(first)))
        for member in members:
            if row >= per_col:
                col, row = col + 1, 0
            cell[member] = (col, row)
            row += 1
            tallest = max(tallest, row)
    # Each column is as wide as its longest label (up to _LABEL_CHARS characters).
    col_w = [NODE_W] * (col + 1)
    for member, (c, _) in cell.items():
        col_w[c] = max(col_w[c], _text_width(_short(str(nodes[member].get("label", member)))))
    for c, _, text in header_cells:
        col_w[c] = max(col_w[c], _text_width(_short(text)) - 16)
    col_x = [LEFT]
    for w in col_w[:-1]:
        col_x.append(col_x[-1] + w + COL_W - NODE_W)
    position = {m: (col_x[c], TOP + r * ROW_H) for m, (c, r) in cell.items()}
    column = {m: c for m, (c, _) in cell.items()}
    widths = {m: col_w[c] for m, (c, _) in cell.items()}
    headers = [
        (col_x[c], TOP - 18 if r < 0 else TOP + r * ROW_H + 18, text) for c, r, text in header_cells
    ]
    width = (col_x[-1] + col_w[-1] + LEFT + 40) if cell else LEFT * 2 + NODE_W + 40
    height = TOP + tallest * ROW_H + 16
    return GraphLayout(nodes, pairs, position, column, headers, width, height, hidden, widths)


def _edge_path(lay: GraphLayout, src: str, dst: str) -> str:
    (sx, sy), (dx, dy) = lay.position[src], lay.position[dst]
    sw, dw = lay.widths.get(src, NODE_W), lay.widths.get(dst, NODE_W)
    half = NODE_H // 2
    sy, dy = sy + half, dy + half
    if src == dst:
        x1 = sx + sw
        return f"M{x1} {sy - 6}C{x1 + 36} {sy - 26} {x1 + 36} {sy + 26} {x1} {sy + 6}"
    if lay.column[src] == lay.column[dst]:
        x1 = sx + sw
        bulge = 30 + abs(dy - sy) // 4
        return f"M{x1} {sy}C{x1 + bulge} {sy} {x1 + bulge} {dy} {x1} {dy}"
    if lay.column[src] < lay.column[dst]:
        x1, x2 = sx + sw, dx
        bend = max(40, (x2 - x1) // 2)
        return f"M{x1} {sy}C{x1 + bend} {sy} {x2 - bend} {dy} {x2} {dy}"
    x1, x2 = sx, dx + dw
    bend = max(40, (x1 - x2) // 2)
    return f"M{x1} {sy}C{x1 - bend} {sy} {x2 + bend} {dy} {x2} {dy}"


def _node_colors(data: dict[str, Any]) -> tuple[str, str]:
    group = str(data.get("group", ""))
    if group.startswith("ns:"):
        return COLORS["workload"]
    if group in ("nodes", "cluster entities"):
        return COLORS[group]
    return COLORS["external"]


def render_svg(
    graph: nx.MultiDiGraph | GraphLayout,
    *,
    max_nodes: int | None = None,
    in_scope: Iterable[str] = (),
    standalone: bool = True,
    title: str = "Communication graph: workloads by namespace, outside peers by address class",
    segments: dict[str, str] | None = None,
) -> str:
    """The graph as one SVG document (``standalone``) or an ``<svg>`` element for HTML.

    Parameters
    ----------
    graph
        A graph from :func:`~recommender.build_graph`, or a :class:`GraphLayout`.
    max_nodes, in_scope
        As in :func:`layout_graph`.
    standalone
        True: an XML document with the SVG namespace (a ``.svg`` file); False: an element to
        inline in HTML (no namespace URL needed there).
    title
        The drawing's accessible title.
    segments
        Optional proposed segment of each node id (:mod:`recommender.analysis.segments`), shown in
        the node tooltips.

    Notes
    -----
    Each node is one ``<rect>`` titled ``group: name``; each (source, destination) pair one
    path titled ``source -> destination: ports (connections)``, dashed red when denied.
    Elements carry ``data-n`` (node index) and ``data-s``/``data-t`` (edge ends) for the
    interactive page (:mod:`recommender.report.graph_html`).
    """
    lay = graph if isinstance(graph, GraphLayout) else layout_graph(
        graph, max_nodes=max_nodes, in_scope=in_scope
    )
    nodes = lay.nodes
    index = {n: i for i, n in enumerate(sorted(lay.position))}
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n' if standalone else "",
        f'<svg{ns} role="img" aria-labelledby="graph-title" width="{lay.width}" '
        f'height="{lay.height}" viewBox="0 0 {lay.width} {lay.height}" '
        'font-family="system-ui,sans-serif" font-size="12">',
        f'<title id="graph-title">{xml_text(title)}</title>',
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
        'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0 0L10 5L0 10z" fill="#57606a"/></marker>'
        '<marker id="arrow-denied" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
        'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0 0L10 5L0 10z" fill="#cf222e"/></marker>'
        "</defs>",
    ]
    if not standalone:
        out[0] = ""
    for x, y, header in lay.headers:
        out.append(
            f'<text x="{x}" y="{y}" font-weight="600" font-size="13">'
            f"<title>{xml_text(header)}</title>{xml_text(_short(header))}</text>"
        )
    for (src, dst, _verdict), data in sorted(lay.edges.items()):
        if src not in index or dst not in index:
            continue
        path = _edge_path(lay, src, dst)
        denied = bool(data.get("denied"))
        stroke = 1 + min(3.0, math.log10(data["connections"] + 1))
        color, marker = ("#cf222e", "arrow-denied") if denied else ("#57606a", "arrow")
        dash = ' stroke-dasharray="5 4"' if denied else ""
        tip = (
            f"{'DENIED ' if denied else ''}{nodes[src].get('label', src)} \u2192 "
            f"{nodes[dst].get('label', dst)}: {', '.join(data['ports'])} "
            f"({data['connections']:,} connections)"
        )
        out.append(
            f'<g class="e" data-s="{index[src]}" data-t="{index[dst]}">'
            f"<title>{xml_text(tip)}</title>"
            f'<path d="{path}" fill="none" stroke="{color}" stroke-opacity="0.7" '
            f'stroke-width="{stroke:.1f}"{dash} marker-end="url(#{marker})"/>'
            f'<path d="{path}" fill="none" stroke="transparent" stroke-width="8"/></g>'
        )
    for node in sorted(lay.position):
        x, y = lay.position[node]
        data = nodes[node]
        fill, line = _node_colors(data)
        name = str(data.get("label", node))
        tip = f"{_display_group(data)}: {name}"
        if segments and node in segments:
            tip += f" (segment {segments[node]})"
        out.append(
            f'<g class="n" data-n="{index[node]}"><title>{xml_text(tip)}</title>'
            f'<rect x="{x}" y="{y}" width="{lay.widths.get(node, NODE_W)}" '
            f'height="{NODE_H}" rx="5" '
            f'fill="{fill}" stroke="{line}"/>'
            f'<text x="{x + 8}" y="{y + 16}">{xml_text(_short(name))}</text></g>'
        )
    out.append("</svg>")
    return "".join(out) + ("\n" if standalone else "")
