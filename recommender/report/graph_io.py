"""Writing the communication graph: GraphML, node-link JSON, DOT, SVG or an HTML page.

:func:`write_graph` picks the format from the file name's extension (:data:`GRAPH_FORMATS`).
The in-memory graph keeps lists and label maps as Python values; GraphML and DOT hold only
scalars, so there they are written as JSON text (``labels`` becomes ``{"app": "cart"}``).
Attributes that are None are left out. Every writer is deterministic: the same graph gives
the same bytes.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Final

import networkx as nx

from ..errors import ConfigError, InputError

__all__ = [
    "GRAPH_FORMATS",
    "graph_dot",
    "graph_graphml",
    "graph_json",
    "write_graph",
]

#: File extensions :func:`write_graph` knows, and what it writes for each.
GRAPH_FORMATS: Final = {
    ".graphml": "GraphML (networkx, Gephi, yEd, Cytoscape)",
    ".json": "node-link JSON (networkx.node_link_graph(data, edges='edges'))",
    ".dot": "Graphviz DOT text (no Graphviz needed to write it)",
    ".gv": "Graphviz DOT text",
    ".svg": "a static SVG picture, grouped by namespace",
    ".html": "an interactive, self-contained HTML page (no network)",
}

PathLike = str | os.PathLike[str]


def _scalar(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        return json.dumps(items, ensure_ascii=False)
    return str(value)


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _scalar(v) for k, v in sorted(data.items()) if v is not None}


def _clean(text: str) -> str:
    """Text without the characters XML 1.0 cannot hold (GraphML would be unreadable)."""
    from .graph_svg import _UNSAFE

    return _UNSAFE.sub("\ufffd", text)


def _xml(value: Any) -> str:
    """Escaped for XML text and attributes; line breaks and tabs as character references,
    which attribute-value normalisation would otherwise turn into spaces."""
    text = html.escape(_clean(str(value)), quote=True)
    return text.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")


_GRAPHML_TYPES: Final = ((bool, "boolean"), (int, "long"), (float, "double"), (str, "string"))


def _graphml_keys(
    domain: str, items: list[dict[str, Any]], ids: dict[tuple[str, str], str], out: list[str]
) -> None:
    types: dict[str, str] = {}
    for data in items:
        for name, value in data.items():
            kind = next(t for cls, t in _GRAPHML_TYPES if isinstance(value, cls))
            if types.setdefault(name, kind) != kind:
                types[name] = "string"
    for name in sorted(types):
        key = f"d{len(ids)}"
        ids[(domain, name)] = key
        out.append(
            f'  <key id="{key}" for="{domain}" attr.name="{_xml(name)}" '
            f'attr.type="{types[name]}"/>'
        )


def _graphml_data(domain: str, data: dict[str, Any], ids: dict[tuple[str, str], str]) -> str:
    parts = []
    for name, value in data.items():
        text = ("true" if value else "false") if isinstance(value, bool) else _xml(value)
        parts.append(f'<data key="{ids[(domain, name)]}">{text}</data>')
    return "".join(parts)


def graph_graphml(graph: nx.MultiDiGraph) -> bytes:
    """The graph as GraphML (UTF-8 bytes); read it back with
    ``networkx.read_graphml(path, force_multigraph=True)`` (edge ``id`` is the edge key)."""
    graph_attrs = _flat(dict(graph.graph))
    nodes = [(n, _flat(d)) for n, d in graph.nodes(data=True)]
    edges = [(s, t, k, _flat(d)) for s, t, k, d in graph.edges(keys=True, data=True)]
    out = [
        "<?xml version='1.0' encoding='utf-8'?>",
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
        'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">',
    ]
    ids: dict[tuple[str, str], str] = {}
    _graphml_keys("graph", [graph_attrs], ids, out)
    _graphml_keys("node", [d for _, d in nodes], ids, out)
    _graphml_keys("edge", [d for *_, d in edges], ids, out)
    out.append('  <graph edgedefault="directed">')
    if graph_attrs:
        out.append("    " + _graphml_data("graph", graph_attrs, ids))
    for n, data in nodes:
        out.append(f'    <node id="{_xml(n)}">{_graphml_data("node", data, ids)}</node>')
    for src, dst, key, data in edges:
        out.append(
            f'    <edge source="{_xml(src)}" target="{_xml(dst)}" id="{_xml(key)}">'
            f"{_graphml_data('edge', data, ids)}</edge>"
        )
    out += ["  </graph>", "</graphml>"]
    return ("\n".join(out) + "\n").encode()


def graph_json(graph: nx.MultiDiGraph) -> str:
    """The graph as node-link JSON: ``{"directed", "multigraph", "graph", "nodes",
    "edges"}``; ``networkx.node_link_graph(data, edges="edges")`` reads it back (networkx 3.4
    and later; older versions: rename ``edges`` to ``links``)."""
    data = {
        "directed": True,
        "multigraph": True,
        "graph": dict(sorted(graph.graph.items())),
        "nodes": [{"id": n, **dict(sorted(d.items()))} for n, d in graph.nodes(data=True)],
        "edges": [
            {"source": s, "target": t, "key": k, **dict(sorted(d.items()))}
            for s, t, k, d in graph.edges(keys=True, data=True)
        ],
    }
    return json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n"


def _dot_id(text: Any) -> str:
    """A DOT double-quoted string: backslashes and quotes escaped, line breaks as ``\\n``."""
    value = str(text).replace("\\", "\\\\").replace('"', '\\"')
    value = value.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return '"' + _clean(value) + '"'


def _dot_attrs(data: dict[str, Any]) -> str:
    return ", ".join(f"{_dot_id(k)}={_dot_id(v)}" for k, v in _flat(data).items())


def graph_dot(graph: nx.MultiDiGraph) -> str:
    """The graph as Graphviz DOT text: namespaces and outside groups as clusters.

    Every id and attribute is a quoted, escaped string, so no flow data can end a statement.
    Render it with ``dot -Tsvg graph.dot`` (``sfdp`` for large graphs).
    """
    groups: dict[str, list[str]] = {}
    for n, data in graph.nodes(data=True):
        groups.setdefault(str(data.get("group", "unknown")), []).append(n)
    lines = [
        "digraph communication {",
        '  graph [rankdir="LR", fontname="sans-serif"];',
        '  node [shape="box", style="rounded,filled", fillcolor="#ddf4ff", '
        'fontname="sans-serif"];',
    ]
    for k, v in _flat(dict(graph.graph)).items():
        lines.append(f"  graph [{_dot_id(k)}={_dot_id(v)}];")
    for i, group in enumerate(sorted(groups)):
        lines.append(f"  subgraph {_dot_id(f'cluster_{i}')} {{")
        lines.append(f"    label={_dot_id(group)};")
        for n in groups[group]:
            data = dict(graph.nodes[n])
            if data.get("kind") != "workload":
                data.setdefault("fillcolor", "#fff1e5")
            lines.append(f"    {_dot_id(n)} [{_dot_attrs(data)}];")
        lines.append("  }")
    for src, dst, key, data in graph.edges(keys=True, data=True):
        attrs = {"key": key, **data}
        port = data.get("port")
        attrs.setdefault("label", f"{data.get('protocol', '?')}/{'*' if port is None else port}")
        if data.get("verdict") == "denied":
            attrs.update(color="#cf222e", style="dashed")
        lines.append(f"  {_dot_id(src)} -> {_dot_id(dst)} [{_dot_attrs(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(
    graph: nx.MultiDiGraph,
    path: PathLike,
    *,
    max_nodes: int | None = None,
    segments: dict[str, str] | None = None,
) -> Path:
    """Write the graph to ``path`` in the format its extension names (:data:`GRAPH_FORMATS`).

    Parameters
    ----------
    graph
        A graph from :func:`recommender.build_graph`.
    path
        The file to write; its extension picks the format.
    max_nodes
        SVG and HTML only: draw at most this many nodes (the busiest); None: all for SVG,
        :data:`~recommender.report.graph_html.HTML_MAX_NODES` (1,000) for HTML, whose layout
        runs in the browser.
    segments
        SVG and HTML only: the proposed segment of each node id, shown with it
        (``SegmentProposal.assignments``).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ConfigError
        For an extension that is not in :data:`GRAPH_FORMATS`.
    InputError
        When the file cannot be written.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in GRAPH_FORMATS:
        known = ", ".join(sorted(GRAPH_FORMATS))
        hint = ""
        if suffix == ".png":
            hint = " (PNG: write .svg and convert it, or open the .html page)"
        raise ConfigError(
            f"{target.name}: unknown graph format {suffix or '(no extension)'!r}; "
            f"use one of {known}{hint}."
        )
    data: bytes
    if suffix == ".graphml":
        data = graph_graphml(graph)
    elif suffix == ".json":
        data = graph_json(graph).encode()
    elif suffix in (".dot", ".gv"):
        data = graph_dot(graph).encode()
    elif suffix == ".svg":
        from .graph_svg import render_svg

        data = render_svg(graph, max_nodes=max_nodes, segments=segments).encode()
    else:
        from .graph_html import HTML_MAX_NODES, graph_html

        cap = HTML_MAX_NODES if max_nodes is None else max_nodes
        data = graph_html(graph, max_nodes=cap, segments=segments).encode()
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}.") from None
    return target
