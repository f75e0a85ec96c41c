"""The communication graph as one interactive, self-contained HTML page.

The drawing is made in the browser by Cytoscape.js with the fCoSE force-directed layout for
compound graphs (vendored under ``recommender/report/static/`` with their MIT licences, see its
README): every namespace is a box holding its workloads, and the outside peers are boxed by
address class (``external: public``, ``external: private``, ``nodes``, ``cluster entities``); an
outside group with many members is drawn as one node. Hovering an edge shows its ports and
connections, denied flows are dashed red, and a click on a node lists its edges with ports and
counts in the side panel beside the drawing (never under it). The layout starts from a seeded
random placement, so the same page gives the same picture.

There are no external resources: the page embeds the scripts, and its Content-Security-Policy
allows only those scripts (by their SHA-256) and inline styles. The graph is embedded as JSON
with ``<``, ``>`` and ``&`` escaped, so no flow data can end the script element, and the page's
script writes every text with ``textContent``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

import networkx as nx

from .graph_svg import _display_group, _group_key, drawn_graph, xml_text

__all__ = ["HTML_MAX_NODES", "VENDORED", "GraphWidget", "graph_html", "graph_widget"]

#: Most nodes the page draws by default (the busiest); the layout runs in the reader's browser.
HTML_MAX_NODES: Final = 1000

#: The vendored scripts in load order, with the SHA-256 of each file as fetched from npm.
VENDORED: Final = {
    "layout-base.js": "ec15ab5df9af3f20708f4faab994accf91cda71848cd5bb10a23432cc50b6745",
    "cose-base.js": "7cae9509bd36235a63a85e71c8d9fa2cd0bc1d0c1ecc5b5a737976f39d040ddf",
    "cytoscape-fcose.js": "4b1cab218d74996aa59cd8473f9239cc6398b8c1774d84d7e59ad9a68959cb57",
    "cytoscape.min.js": "71fa9ebec21a7ca2c40cff6aacc30d1f6464e363662ad4b2c197e1adc770cd94",
}

_PAGE_CSS: Final = "html,body{margin:0;height:100%}body{height:100vh}"


@cache
def static_text(name: str) -> str:
    """A file of ``recommender/report/static`` (the vendored scripts, ``graph.js``/``.css``)."""
    return (resources.files("recommender.report") / "static" / name).read_text(encoding="utf-8")


def _script_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _json_for_script(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=True, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _node_class(data: dict[str, Any]) -> str:
    group = str(data.get("group", ""))
    if group.startswith("ns:"):
        return "workload"
    if group == "nodes":
        return "nodes"
    if group == "cluster entities":
        return "entity"
    return "external"


_LABEL_CHARS: Final = 48


def _label(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "\u2026"


@dataclass(frozen=True)
class GraphWidget:
    """The graph as parts of a page, for the graph page and other pages that show it.

    Attributes
    ----------
    body
        The ``<div data-graph>`` element: the drawing area and the side panel.
    data
        The ``<script type="application/json" id="graph-data">`` element.
    scripts
        The scripts to run after both, in order (vendored libraries, then ``graph.js``).
    css
        The widget's style sheet.
    nodes, hidden
        How many nodes are drawn, and how many the cap left out.
    """

    body: str
    data: str
    scripts: tuple[str, ...]
    css: str
    nodes: int
    hidden: int

    def script_hashes(self) -> list[str]:
        """CSP sources (``'sha256-...'``) allowing exactly :attr:`scripts` inline."""
        return [f"'{_script_hash(s)}'" for s in self.scripts]


def graph_elements(
    graph: nx.MultiDiGraph,
    *,
    max_nodes: int | None = HTML_MAX_NODES,
    in_scope: Iterable[str] = (),
    segments: dict[str, str] | None = None,
) -> tuple[dict[str, Any], int]:
    """The JSON the page's script draws: compound groups, nodes and edges, and the number of
    nodes the cap left out."""
    nodes, pairs, hidden = drawn_graph(graph, max_nodes=max_nodes)
    scope = set(in_scope)
    groups = sorted({str(d.get("group", "unknown")) for d in nodes.values()},
                    key=lambda g: _group_key(g, scope))  # fmt: skip
    group_ids = {g: f"g{i}" for i, g in enumerate(groups)}
    order = sorted(
        nodes,
        key=lambda n: (
            _group_key(str(nodes[n].get("group", "unknown")), scope),
            str(nodes[n].get("label", n)),
            n,
        ),
    )
    ids = {n: f"n{i}" for i, n in enumerate(order)}
    out_groups: list[dict[str, Any]] = []
    for g in groups:
        first = next(d for d in nodes.values() if str(d.get("group", "unknown")) == g)
        out_groups.append({
            "id": group_ids[g],
            "label": _display_group(first),
            "kind": "namespace" if g.startswith("ns:") else "outside",
        })  # fmt: skip
    out_nodes: list[dict[str, Any]] = []
    for n in order:
        data = nodes[n]
        attrs = {k: v for k, v in data.items() if v is not None}
        if segments and n in segments:
            attrs["segment"] = segments[n]
        name = str(data.get("label", n))
        title = f"{_display_group(data)}: {name}"
        if segments and n in segments:
            title += f" (segment {segments[n]})"
        out_nodes.append({
            "id": ids[n],
            "key": n,
            "label": _label(name),
            "title": title,
            "parent": group_ids[str(data.get("group", "unknown"))],
            "cls": _node_class(data),
            "attrs": {"id": n, **attrs},
        })  # fmt: skip
    out_edges: list[dict[str, Any]] = []
    for (src, dst, _verdict), data in sorted(pairs.items()):
        out_edges.append({
            "id": f"e{len(out_edges)}",
            "source": ids[src],
            "target": ids[dst],
            "ports": list(data["ports"]),
            "connections": int(data["connections"]),
            "edges": int(data["edges"]),
            "denied": bool(data["denied"]),
            "width": round(1 + min(3.0, math.log10(data["connections"] + 1)), 1),
        })  # fmt: skip
    return {"groups": out_groups, "nodes": out_nodes, "edges": out_edges}, hidden


def graph_widget(
    graph: nx.MultiDiGraph,
    *,
    max_nodes: int | None = HTML_MAX_NODES,
    in_scope: Iterable[str] = (),
    segments: dict[str, str] | None = None,
    title: str = "Communication graph",
    note: str = "",
) -> GraphWidget:
    """The interactive graph as parts of a page (see :class:`GraphWidget`)."""
    elements, hidden = graph_elements(
        graph, max_nodes=max_nodes, in_scope=in_scope, segments=segments
    )
    allowed = sum(1 for *_, d in graph.edges(data=True) if d.get("verdict") == "allowed")
    counts = (
        f"{graph.number_of_nodes():,} nodes, {allowed:,} allowed and "
        f"{graph.number_of_edges() - allowed:,} denied edges"
    )
    if hidden:
        counts += f"; the drawing shows the {len(elements['nodes']):,} busiest nodes"
    body = "".join([
        '<div class="rg" data-graph="1">',
        '<div class="rg-view" role="img" aria-label="communication graph">'
        '<div class="rg-tip"></div></div>',
        '<aside class="rg-panel">',
        f"<h1>{xml_text(title)}</h1>",
        f'<p class="rg-muted">{xml_text(counts)}. {xml_text(note)}Boxes are namespaces and '
        "outside address classes. Hover an edge for its ports; click a node for its edges; "
        "drag to pan, wheel to zoom.</p>",
        '<p class="rg-legend"><span><span class="rg-sw workload"></span>workload</span>'
        '<span><span class="rg-sw external"></span>outside address</span>'
        '<span><span class="rg-sw nodes"></span>node</span>'
        '<span><span class="rg-sw entity"></span>cluster entity</span>'
        '<span class="rg-dash">- - denied</span></p>',
        '<button class="rg-fit" type="button">fit</button>'
        '<button class="rg-clear" type="button">clear</button>',
        '<input class="rg-search" type="search" placeholder="search nodes, labels" '
        'aria-label="search nodes">',
        '<div class="rg-details"></div>',
        "</aside></div>",
    ])  # fmt: skip
    data = (
        f'<script id="graph-data" type="application/json">{_json_for_script(elements)}</script>'
    )
    scripts = (*(static_text(name) for name in VENDORED), static_text("graph.js"))
    return GraphWidget(
        body=body,
        data=data,
        scripts=scripts,
        css=static_text("graph.css"),
        nodes=len(elements["nodes"]),
        hidden=hidden,
    )


def graph_html(
    graph: nx.MultiDiGraph,
    *,
    max_nodes: int | None = HTML_MAX_NODES,
    in_scope: Iterable[str] = (),
    segments: dict[str, str] | None = None,
    title: str = "Communication graph",
) -> str:
    """Render the graph as an interactive HTML page (see the module docstring).

    Parameters
    ----------
    graph
        A graph from :func:`recommender.build_graph`.
    max_nodes
        Draw at most this many nodes, the busiest (default :data:`HTML_MAX_NODES`: the layout
        runs in the browser); None: all.
    in_scope
        Namespaces placed first in the data (the layout decides where they are drawn).
    segments
        Optional proposed segment of each node id, listed with the node's attributes.
    title
        The page title.

    Returns
    -------
    str
        The page; the same graph gives the same text.
    """
    widget = graph_widget(
        graph, max_nodes=max_nodes, in_scope=in_scope, segments=segments, title=title
    )
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src {' '.join(widget.script_hashes())}; base-uri 'none'; form-action 'none'"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        f"<title>{xml_text(title)}</title>",
        f"<style>{_PAGE_CSS}{widget.css}</style>",
        "</head>",
        "<body>",
        widget.body,
        widget.data,
        *(f"<script>{s}</script>" for s in widget.scripts),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
