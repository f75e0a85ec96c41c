"""``report.html``: the recommendation report as one self-contained page.

The page needs no network: the CSS is inline, the communication graph is an inline SVG drawn
here, and there is no JavaScript. Every value taken from the report is escaped (flow data is
attacker-influenced: labels, workload names, DNS names). The same report gives the same bytes:
the page holds no time of its own and every collection is drawn in a fixed order.

>>> from recommender.report.html import report_html            # doctest: +SKIP
>>> page = report_html(rec.report, rec.edges)                  # doctest: +SKIP
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

import pyarrow as pa

from ..aggregate.addresses import classify_address, classify_network
from .sections import (
    FOLD_ROWS,
    anomalies_sentence,
    denied_sentence,
    group_anomalies,
    group_flows,
    group_reason,
    partial_sentence,
    report_sections,
    split_scans,
)
from .text import flag_help, plural

__all__ = ["GRAPH_MAX_NODES", "report_html"]

#: Most nodes the communication graph draws; larger graphs keep the busiest nodes.
GRAPH_MAX_NODES: Final = 200
#: Longer flow lists are folded (a <details> element, no script).
_FOLD_ROWS: Final = 25


_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")

_CSS: Final = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;--alt:#f6f8fa;--ok:#1a7f37;
--warn:#9a6700;--bad:#cf222e;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1400px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:36px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:16px;margin:22px 0 8px}
p{margin:6px 0}
nav ul{list-style:none;padding:0;margin:10px 0 0;display:flex;flex-wrap:wrap;gap:4px 14px}
a{color:var(--accent)}
.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;
margin:14px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:var(--alt)}
.card dt{font-size:12px;color:var(--muted)}
.card dd{margin:2px 0 0;font-size:20px;font-weight:600}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;
color:#fff;vertical-align:middle}
.ok{background:var(--ok)}.warn{background:var(--warn)}.bad{background:var(--bad)}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
caption{text-align:left;color:var(--muted);padding:2px 0 4px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--alt);font-weight:600;white-space:nowrap}
tbody tr:nth-child(even){background:#fbfcfd}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.flag{display:inline-block;background:#fff8c5;border:1px solid #d4a72c;border-radius:4px;
padding:0 5px;margin:1px 2px 1px 0;font-size:12px}
.graph{border:1px solid var(--line);border-radius:8px;background:#fcfdfe;padding:6px}
.legend-list{list-style:none;padding:0;margin:4px 0 12px;font-size:12px;color:var(--muted)}
.verdict{font-size:16px}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px;color:var(--muted);margin:6px 0}
.sw{display:inline-block;width:14px;height:10px;border-radius:2px;margin-right:4px;
vertical-align:middle;border:1px solid #8c959f}
details{margin:8px 0}
summary{cursor:pointer;color:var(--accent)}
@media print{.scroll{overflow:visible}}
"""


def _text(value: Any) -> str:
    """Escaped text for element content and quoted attributes."""
    if type(value) is str:  # most values: names, often repeated
        return _escaped(value)
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return html.escape(_UNSAFE.sub("\ufffd", str(value)), quote=True)


@lru_cache(maxsize=1 << 16)
def _escaped(text: str) -> str:
    """:func:`_text` of a string (remembered: a report repeats its names many times)."""
    return html.escape(_UNSAFE.sub("\ufffd", text), quote=True)


def _cell(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{_text(k)}={_text(v)}" for k, v in sorted(value.items(), key=str))
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return "<br>".join(_text(v) for v in items)
    return _text(value)


_UTC_TIME = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(?:\+00:00|Z)")


def _time(value: Any) -> Any:
    """An ISO 8601 UTC time shown to the second, the full value kept in ``datetime``."""
    match = _UTC_TIME.fullmatch(value) if isinstance(value, str) else None
    if not match:
        return value
    # A matched time is digits, "-", ":", "T", ".", "+" and "Z": its escaped text is itself.
    return _Html(f'<time datetime="{value}">{match[1]} {match[2]}</time>')


def _flags(flags: Iterable[Any]) -> str:
    if not flags:  # most rules: nothing to mark
        return ""
    return "".join(
        _flag(f) if type(f) is str else _flag_markup(f) for f in flags
    )


@lru_cache(maxsize=4096)
def _flag(flag: str) -> str:
    """:func:`_flag_markup` of a flag's text (a report repeats a few flags many times)."""
    return _flag_markup(flag)


def _flag_markup(flag: Any) -> str:
    return f'<span class="flag" title="{_text(flag_help(str(flag)))}">{_text(flag)}</span>'


def _flag_legend(flag_lists: Iterable[Iterable[Any]]) -> str:
    """What each flag shown in the table above means."""
    seen = sorted({str(f) for flags in flag_lists for f in flags})
    if not seen:
        return ""
    items = "".join(
        f"<li>{_flags([f])} {_text(flag_help(f) or 'see docs/report.md')}</li>" for f in seen
    )
    return f'<ul class="legend-list">{items}</ul>'


@dataclass
class _Html:
    """A raw HTML fragment (already escaped)."""

    markup: str


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None
) -> str:
    out = ['<div class="scroll"><table>']
    if caption:
        out.append(f"<caption>{_text(caption)}</caption>")
    out.append("<thead><tr>")
    out += [f'<th scope="col">{_text(h)}</th>' for h in headers]
    out.append("</tr></thead><tbody>")
    append = out.append
    for row in rows:
        append("<tr>")
        for value in row:
            kind = type(value)
            if kind is str:  # most cells (what _cell does with text)
                append(f"<td>{_escaped(value)}</td>")
            elif kind is _Html:
                append(f"<td>{value.markup}</td>")
            elif kind is int:  # _text of a number
                append(f'<td class="num">{value:,}</td>')
            elif kind is list and _all_text(value):  # peers, ports: _cell of a list of text
                append(f"<td>{'<br>'.join(map(_escaped, value))}</td>")
            elif isinstance(value, _Html):
                append(f"<td>{value.markup}</td>")
            elif isinstance(value, int | float) and not isinstance(value, bool):
                append(f'<td class="num">{_text(value)}</td>')
            else:
                append(f"<td>{_cell(value)}</td>")
        append("</tr>")
    append("</tbody></table></div>")
    return "".join(out)


_JUST_TEXT: Final = frozenset((str,))


def _all_text(values: list[Any]) -> bool:
    """Whether every item of ``values`` is a ``str`` (not a subclass)."""
    return not values or set(map(type, values)) == _JUST_TEXT


def _endpoint(row: Mapping[str, Any], side: str) -> str:
    return f"{row.get(f'{side}_namespace') or row.get(f'{side}_kind')}/{row.get(f'{side}_id')}"


def _port(row: Mapping[str, Any]) -> str:
    port = row.get("dst_port")
    return f"{row.get('protocol')}/{'*' if port is None else port}"


# --- the communication graph ------------------------------------------------------------------


_NodeKey = tuple[str, str]  # (group, id)


@dataclass
class _Edge:
    ports: set[str] = field(default_factory=set)
    connections: int = 0
    denied: bool = False


@dataclass
class _Graph:
    groups: dict[str, str] = field(default_factory=dict)  # group -> kind (ns/outside)
    names: dict[_NodeKey, str] = field(default_factory=dict)
    edges: dict[tuple[_NodeKey, _NodeKey, bool], _Edge] = field(default_factory=dict)

    def node(self, group: str, ident: str, kind: str, name: str | None = None) -> _NodeKey:
        self.groups.setdefault(group, kind)
        key = (group, ident)
        if name or key not in self.names:
            self.names[key] = name or self.names.get(key) or ident
        return key

    def add(self, src: _NodeKey, dst: _NodeKey, port: str, connections: int, denied: bool) -> None:
        edge = self.edges.setdefault((src, dst, denied), _Edge(denied=denied))
        edge.ports.add(port)
        edge.connections += connections


def _address_group(address: str, network: bool = False) -> str:
    try:
        cls = classify_network(address) if network else classify_address(address)
    except Exception:  # a malformed address still gets drawn
        cls = None
    return f"external: {cls or 'mixed'}"


def _graph_from_rules(graph: _Graph, report: Mapping[str, Any]) -> None:
    by_selector: dict[tuple[str, str], list[str]] = defaultdict(list)
    for sel in report.get("selectors") or []:
        labels = sel.get("selector") or {}
        text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        by_selector[(str(sel.get("namespace")), text)].append(str(sel.get("workload")))
    for rule in report.get("rules") or []:
        ns = str(rule.get("namespace"))
        owner = graph.node(f"ns: {ns}", str(rule.get("workload")), "ns")
        ports = ", ".join(str(p) for p in rule.get("ports") or []) or "all ports"
        connections = int(rule.get("connections") or 0)
        for peer in rule.get("peers") or []:
            peer = str(peer)
            targets: list[_NodeKey] = []
            if peer.startswith("ipBlock "):
                cidr = peer[len("ipBlock ") :].split(" ", 1)[0]
                targets.append(graph.node(_address_group(cidr, True), peer[8:], "outside"))
            else:
                # "ns/key=value,...", or "key=value,..." in the rule's namespace; label keys
                # may hold a "/" after a dotted prefix, a namespace name holds neither "." nor "=".
                head, slash, rest = peer.partition("/")
                if slash and not any(c in head for c in ".=,"):
                    peer_ns, pods = head, rest
                else:
                    peer_ns, pods = ns, peer
                canonical = ",".join(sorted(p for p in pods.split(",") if p and p != "*"))
                found = by_selector.get((peer_ns, canonical), [])
                if found:
                    targets += [graph.node(f"ns: {peer_ns}", w, "ns") for w in sorted(found)]
                else:
                    label = "all pods" if pods in ("", "*") else pods
                    targets.append(graph.node(f"ns: {peer_ns}", f"[{label}]", "ns"))
            for target in targets:
                if rule.get("direction") == "ingress":
                    graph.add(target, owner, ports, connections, False)
                else:
                    graph.add(owner, target, ports, connections, False)


def _rules_graph(report: Mapping[str, Any]) -> Any:
    """The graph drawn from the report's rules (no edges at hand): workloads by selector,
    ipBlock peers by address class, as a graph of :mod:`recommender.analysis.graph`'s schema."""
    import networkx as nx

    from ..analysis.graph import node_id

    drawn = _Graph()
    _graph_from_rules(drawn, report)
    g = nx.MultiDiGraph()

    def nid(key: _NodeKey) -> str:
        group, ident = key
        if group.startswith("ns: "):
            return node_id("workload", ident, group[4:])
        return node_id("external", ident)

    for key in sorted(drawn.names):
        group, _ = key
        if group.startswith("ns: "):
            attrs = {"kind": "workload", "group": f"ns:{group[4:]}", "namespace": group[4:]}
        else:
            attrs = {"kind": "external", "group": group.replace(": ", ":", 1)}
        g.add_node(nid(key), label=drawn.names[key], **attrs)
    for (src, dst, _), edge in sorted(drawn.edges.items()):
        g.add_edge(nid(src), nid(dst), key="allowed rule", verdict="allowed",
                   connections=edge.connections, bytes=0, ports=sorted(edge.ports))  # fmt: skip
    return g


def _graph_svg(report: Mapping[str, Any], edges: pa.Table | None, built: Any = None) -> str:
    import networkx as nx

    from ..analysis.graph import graph_from_edges
    from .graph_svg import layout_graph, render_svg

    denied = report.get("denied") or []
    if edges is not None and built is not None and not denied:
        graph = built  # the same nodes, edges and drawn attributes
    elif edges is not None:
        graph = graph_from_edges(edges, denied)
    else:
        graph = nx.compose(_rules_graph(report), graph_from_edges(None, denied))
    if not graph.number_of_nodes():
        return '<p class="muted">No communication to draw.</p>'
    summary = (report.get("summary") or {}).get("namespaces_in_scope") or []
    lay = layout_graph(graph, max_nodes=GRAPH_MAX_NODES, in_scope=[str(ns) for ns in summary])
    note = ""
    if lay.hidden:
        note = (
            f'<p class="muted">The graph has {len(lay.position) + lay.hidden:,} nodes; the '
            f"drawing shows the {GRAPH_MAX_NODES} busiest and the edges between them. The tables "
            "below list everything.</p>"
        )
    legend = (
        '<div class="legend">'
        '<span><span class="sw" style="background:#ddf4ff"></span>workload (column: namespace)'
        "</span>"
        '<span><span class="sw" style="background:#fff1e5"></span>outside address (column: '
        "address class)</span>"
        '<span><span class="sw" style="background:#eaeef2"></span>node</span>'
        '<span><span class="sw" style="background:#fbefff"></span>cluster entity</span>'
        "<span>\u2014 allowed flow (thicker: more connections)</span>"
        '<span style="color:#cf222e">- - denied flow</span>'
        "<span>hover a line for its ports</span></div>"
    )
    source = (
        "observed edges" if edges is not None else "the emitted rules (peers resolved by selector)"
    )
    return (
        f'<p class="muted">Drawn from {_text(source)} and the denied flows listed in this '
        f"report; {len(lay.position):,} nodes, columns in a fixed order (the same drawing as "
        "<code>graph.svg</code> and <code>recommend graph</code>).</p>"
        f'{note}{legend}<div class="scroll graph">{render_svg(lay, standalone=False)}</div>'
    )


def _segments(seg: Mapping[str, Any]) -> str:
    """The *Proposed segments* section (``report["segments"]``)."""
    intro = (
        f'<p class="muted">Community detection ({_text(seg.get("method"))}, seed '
        f"{_text(seg.get('seed'))}) on the graph of allowed traffic between workloads: "
        f"modularity <strong>{_text(seg.get('modularity'))}</strong> (above about 0.3 the "
        "workloads form clear groups). Suggested label: "
        f"<code>{_text(seg.get('label_key'))}=&lt;segment&gt;</code>. Advice only: no policy is "
        "emitted from it. A member's cohesion is the share of its traffic with other workloads "
        "that stays inside (traffic with shared services aside).</p>"
    )
    rows = []
    for s in seg.get("segments") or []:
        cohesion = s.get("cohesion") or {}
        members = "<br>".join(
            f"{_text(str(m).split(':', 1)[-1])} ({_text(cohesion.get(m))})"
            for m in s.get("members") or []
        )
        binding = "<br>".join(
            f"{_text(str(e['source']).split(':', 1)[-1])} \u2192 "
            f"{_text(str(e['destination']).split(':', 1)[-1])} "
            f"{_text(', '.join(e['ports']))} ({_text(e['connections'])})"
            for e in s.get("binding_edges") or []
        )
        rows.append(
            [s.get("name"), _Html(members), s.get("namespaces"), _Html(binding), s.get("reason")]
        )
    table = _table(["segment", "members (cohesion)", "namespaces", "bound by", "why"], rows)
    cross = [
        [
            f.get("source_segment"),
            f.get("destination_segment"),
            f"{f.get('protocol')}/{'*' if f.get('port') is None else f.get('port')}",
            f.get("connections"),
            len(f.get("edges") or []),
        ]
        for f in seg.get("cross_segment") or []
    ]
    flows = _table(
        ["from", "to", "port", "connections", "edges"],
        cross,
        caption="Flows a boundary around each segment would have to allow",
    )
    return intro + table + (_fold(flows, len(cross), "cross-segment flows") if cross else "")


# --- the page ---------------------------------------------------------------------------------


def _section(anchor: str, title: str, body: str) -> str:
    return (
        f'<section id="{anchor}" aria-labelledby="{anchor}-h"><h2 id="{anchor}-h">'
        f"{_text(title)}</h2>{body}</section>"
    )


def _summary(report: Mapping[str, Any]) -> str:
    s = report.get("summary") or {}
    in_scope = s.get("namespaces_in_scope") or []
    out_scope = s.get("namespaces_out_of_scope") or []
    cards = [
        ("policies", s.get("policies")),
        ("rules", s.get("rules")),
        ("namespaces in scope", len(in_scope)),
        ("workloads", s.get("workloads")),
        ("edges", s.get("edges")),
        ("connection rows", s.get("connection_rows")),
        ("flagged rules", s.get("flagged_rules")),
        ("denied edges", s.get("denied_edges")),
        ("denied connections", s.get("denied_connections")),
        ("excluded edges", s.get("excluded_edges")),
    ]
    body = [
        f"<p>Flows from {_html(_time(s.get('first_seen')))} to "
        f"{_html(_time(s.get('last_seen')))} (UTC).</p>",
        '<dl class="cards">',
        *(f'<div class="card"><dt>{_text(k)}</dt><dd>{_text(v)}</dd></div>' for k, v in cards),
        "</dl>",
        f"<p>Namespaces with policies: {_text(', '.join(map(str, in_scope)) or 'none')}.</p>",
    ]
    if out_scope:
        body.append(
            "<p>Namespaces without policies (out of scope): "
            f"{_text(', '.join(map(str, out_scope)))}.</p>"
        )
    return "".join(body)


def _item_port(x: Mapping[str, Any]) -> str:
    port = x.get("port")
    return f"{x.get('protocol')}/{'*' if port is None else port}"


def _problems(check: Mapping[str, Any]) -> str:
    """The self-check's problems, for the top of the page (empty when it passed)."""
    problems = check.get("problems") or []
    if not problems:
        return ""
    items = "".join(f"<li>{_text(p.get('message'))}</li>" for p in problems)
    return (
        '<div class="problems" role="alert"><p><span class="badge bad">self-check failed</span> '
        f"Read this before applying these policies:</p><ul>{items}</ul></div>"
    )


def _never_established(never: Mapping[str, Any]) -> str:
    body = [
        f"<p>{_text(never.get('edges'))} edges ({_text(never.get('connections'))} connections) "
        "were tried but never established; they get no rule.</p>"
    ]
    body.append(
        _table(
            ["source", "destination", "port", "attempts", "first seen", "last seen"],
            [
                [x.get("source"), x.get("destination"), _item_port(x), x.get("connections"),
                 _time(x.get("first_seen")), _time(x.get("last_seen"))]
                for x in never.get("items") or []
            ],
        )
    )  # fmt: skip
    return "".join(body)


def _self_check(check: Mapping[str, Any]) -> str:
    coverage = check.get("coverage")
    false_denies = check.get("false_denies")
    good = (
        coverage == 1
        and not false_denies
        and not check.get("denied_in_input_but_allowed")
        and not check.get("problems")
    )
    badge = '<span class="badge ok">pass</span>' if good else '<span class="badge bad">check</span>'
    cov = f"{coverage:.1%}" if isinstance(coverage, int | float) else coverage
    body = [
        f"<p>{badge} The evidence replayed against these policies with Kubernetes "
        f"NetworkPolicy semantics: <strong>{_text(cov)} covered</strong>.</p>",
        _table(
            ["coverage", "false denies", "denied in input but allowed", "not evaluated edges"],
            [
                [
                    cov,
                    false_denies,
                    check.get("denied_in_input_but_allowed"),
                    check.get("not_evaluated_edges"),
                ]
            ],
        ),
    ]
    over = check.get("over_permissive") or {}
    if over.get("skipped"):
        body.append(f"<p>Over-permissiveness not computed: {_text(over['skipped'])}.</p>")
    elif over:
        body.append(
            f"<p>Over-permissiveness: {_text(over.get('allowed_unobserved'))} of "
            f"{_text(over.get('candidates'))} workload \u00d7 port pairs never observed are "
            "allowed (peers in namespaces without policies count here).</p>"
        )
        if over.get("estimate"):
            body.append(f"<p>That figure is an estimate, an {_text(over['estimate'])}.</p>")
        examples = over.get("examples") or []
        if examples:
            body.append(_table(["example"], [[e] for e in examples]))
    decided = check.get("decisions") or {}
    if decided:
        body.append(
            "<p>Decisions, counted apart from the observed evidence: "
            f"{_text(plural(int(decided.get('allowed_edges') or 0), 'edge'))} allowed by "
            f"decision ({_text(decided.get('allowed_not_allowed'))} not allowed by the "
            f"policies), {_text(plural(int(decided.get('rejected_edges') or 0), 'observed edge'))}"
            f" rejected ({_text(decided.get('rejected_still_allowed'))} still allowed by a "
            "broader rule).</p>"
        )
    purposeful = check.get("excluded_on_purpose") or {}
    if purposeful.get("edges"):
        body.append(
            f"<p>Left out on purpose and replayed as their own kind: "
            f"{_text(purposeful.get('edges'))} edges, {_text(purposeful.get('denied_edges'))} "
            "of them denied by these policies.</p>"
        )
        body.append(
            _table(
                ["reason", "edges", "connections", "denied edges"],
                [
                    [reason, v.get("edges"), v.get("connections"), v.get("denied_edges")]
                    for reason, v in (purposeful.get("by_reason") or {}).items()
                ],
            )
        )
    notes = check.get("notes") or []
    if notes:
        body.append("<ul>" + "".join(f"<li>{_text(n)}</li>" for n in notes) + "</ul>")
    return "".join(body)


def _share(value: Any, digits: int = 2) -> Any:
    """A fraction as a percentage string; anything else as it is (escaped later)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.{digits}%}"
    return value


def _fixed(value: Any) -> Any:
    """A number with two decimals; anything else as it is (escaped later)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.2f}"
    return value


def _fold(table: str, rows: int, what: str) -> str:
    if rows > _FOLD_ROWS:
        return f"<details><summary>Show {rows:,} {_text(what)}</summary>{table}</details>"
    return table


def _holdout(h: Mapping[str, Any]) -> str:
    """The *Held-out validation* section (``report["holdout"]``, ``docs/validation.md``)."""
    learn = h.get("learn") or {}
    test = h.get("test") or {}
    churn = h.get("churn") or {}
    rate = h.get("false_deny_rate")
    good = rate == 0 and not h.get("false_denies")
    badge = '<span class="badge ok">pass</span>' if good else '<span class="badge bad">check</span>'
    holdout = h.get("holdout")
    share = (
        f"; the latest {_text(_share(holdout, 0))} of the time span" if holdout is not None else ""
    )
    body = [
        f"<p>{badge} Policies learned from the flows before {_html(_time(h.get('split_at')))} "
        f"({_text(learn.get('connection_rows'))} rows, {_text(learn.get('rules'))} rules), "
        f"replayed against the flows from then on ({_text(test.get('connection_rows'))} rows"
        f"{share}): <strong>{_text(_share(rate))} false-deny rate</strong>. The policies of "
        "this report are learned from all flows.</p>",
        _table(
            ["window", "first seen", "last seen", "connection rows", "edges", "policies", "rules"],
            [
                [
                    name,
                    _time(w.get("first_seen")),
                    _time(w.get("last_seen")),
                    w.get("connection_rows"),
                    w.get("edges"),
                    w.get("policies"),
                    w.get("rules"),
                ]
                for name, w in (("learn (earlier)", learn), ("test (later)", test))
            ],
            caption="the two windows (times in UTC)",
        ),
        _table(
            [
                "false-deny rate",
                "false-deny connections",
                "observed connections",
                "false-deny edges",
                "observed edges",
                "coverage",
                "not evaluated edges",
            ],
            [
                [
                    _share(rate),
                    h.get("false_deny_connections"),
                    h.get("observed_connections"),
                    h.get("false_deny_edges"),
                    h.get("observed_edges"),
                    _share(h.get("coverage")),
                    h.get("not_evaluated_edges"),
                ]
            ],
            caption="the later window replayed against the policies learned from the earlier one",
        ),
    ]
    denies = h.get("false_denies") or []
    if denies:
        total = h.get("false_deny_edges")
        caption = (
            f"{len(denies):,} edge{'s' if len(denies) != 1 else ''} of the later window the "
            "learned policies deny"
        )
        if isinstance(total, int) and total > len(denies):
            caption += f" (of {total:,})"
        rows = [
            [
                e.get("source"),
                e.get("destination"),
                f"{e.get('protocol')}/{e.get('port')}"
                if e.get("port") is not None
                else e.get("protocol"),
                e.get("connections"),
                e.get("reason"),
            ]
            for e in denies
        ]
        table = _table(["source", "destination", "port", "connections", "why"], rows, caption)
        body.append(_fold(table, len(rows), "edges"))
    body.append(
        f"<p>Rule churn between the two windows' recommendations: stability "
        f"<strong>{_text(_fixed(churn.get('stability')))}</strong> "
        f"({_text(churn.get('unchanged'))} "
        f"rules unchanged, {_text(churn.get('added'))} only in the later window, "
        f"{_text(churn.get('removed'))} only in the earlier one).</p>"
    )
    changed = [("later only", r) for r in churn.get("added_rules") or []] + [
        ("earlier only", r) for r in churn.get("removed_rules") or []
    ]
    if changed:
        rows = [
            [
                where,
                r.get("namespace"),
                r.get("policy"),
                r.get("direction"),
                list(r.get("peers") or []),
                list(r.get("ports") or []),
            ]
            for where, r in changed
        ]
        table = _table(
            ["window", "namespace", "policy", "direction", "peers", "ports"],
            rows,
            caption="rules that differ between the windows",
        )
        body.append(_fold(table, len(rows), "rules"))
    return "".join(body)


def _istio(section: Mapping[str, Any]) -> str:
    """The Istio objects written, the Istio self-check, and the rules flagged for review."""
    objects = ", ".join(f"{n} {k}" for k, n in section["objects"].items()) or "nothing"
    out = [f"<p>Written: {_text(objects)} (trust domain <code>"
           f"{_text(section['trust_domain'])}</code>).</p>"]  # fmt: skip
    check = section.get("self_check")
    if check:
        out.append(
            f"<p>Self-check with Istio's semantics (after the NetworkPolicies): "
            f"{check['coverage']:.2%} of the observed connections allowed, "
            f"{_text(check['false_denies'])} false denies, "
            f"{_text(check['denied_in_input_but_allowed'])} denied flows allowed.</p>"
        )
    if section["flagged_rules"]:
        out.append(_table(
            ["namespace", "policy", "rule", "why"],
            [[r["namespace"], r["policy"], r["rule"], r["flags"]]
             for r in section["flagged_rules"]],
            "Rules to review (annotation recommender.io/review)",
        ))  # fmt: skip
    return "".join(out)


def _mesh(m: Mapping[str, Any]) -> str:
    """What a STRICT PeerAuthentication would refuse."""
    out = [
        f"<p>A STRICT PeerAuthentication is written for {len(m['namespaces'])} "
        f"namespace(s). Workloads with no sign of a mesh proxy in the flows: "
        f"{_text(', '.join(m['workloads_without_proxy']) or 'none')}.</p>"
    ]
    if not m["plain_text"]:
        out.append("<p>No observed connection would be refused as plain text.</p>")
        return "".join(out)
    out.append(_table(
        ["source", "destination", "port", "connections", "why"],
        [[c["source"], c["destination"], f"{c['protocol']}/{c['port']}", c["connections"],
          c["why"]] for c in m["plain_text"]],
        "Plain-text connections STRICT would refuse",
    ))  # fmt: skip
    return "".join(out)


def _guardrails(g: Mapping[str, Any]) -> str:
    """The *Guardrails* section (``report["guardrails"]``, ``docs/guardrails.md``)."""
    conflicts = g.get("conflicts") or []
    body = [
        f"<p>Guardrails <strong>{_text(g.get('name'))}</strong> "
        f"({_text(len(g.get('guardrails') or []))} rules, rendered as {_text(g.get('format'))} "
        "in <code>_guardrails/</code>). Observed flows an admin guardrail denies get no allow "
        "rule.</p>",
        "<h3>Conflicts to resolve</h3>",
    ]
    if conflicts:
        body.append(
            f"<p>{_text(g.get('conflicts_total'))} observed edges "
            f"({_text(g.get('conflict_connections'))} connections) are denied by a guardrail: "
            "change the guardrail or the application.</p>"
        )
        body.append(
            _table(
                ["source", "destination", "port", "connections", "guardrail", "why"],
                [
                    [c.get("source"), c.get("destination"),
                     f"{c.get('protocol')}/{c.get('port')}", c.get("connections"),
                     c.get("guardrail"), c.get("reason")]
                    for c in conflicts
                ],
            )
        )
    else:
        body.append("<p>No observed flow is denied by a guardrail.</p>")
    body.append("<h3>Compliance evidence</h3>")
    body.append(
        "<p>Checks of the whole stack (guardrails and these policies). Each is evidence "
        "toward the controls named, for an assessor to weigh; it is not an assessment and "
        "does not make a system compliant.</p>"
    )
    rows = []
    for c in g.get("compliance") or []:
        status = str(c.get("status"))
        css = {"pass": "ok", "fail": "bad"}.get(status, "")
        controls = c.get("controls") or {}
        rows.append(
            [
                c.get("title"),
                _Html(f'<span class="badge {css}">{_text(status)}</span>'),
                controls.get("pci_dss_v4") or [],
                controls.get("nist_800_53") or [],
                controls.get("soc2") or [],
                controls.get("gdpr") or [],
                c.get("evidence") or [],
            ]
        )
    body.append(
        _table(["check", "status", "PCI DSS v4", "NIST 800-53", "SOC 2", "GDPR", "evidence"], rows)
    )
    return "".join(body)


def _html(value: Any) -> str:
    """A value as markup: an :class:`_Html` fragment as it is, anything else escaped."""
    return value.markup if isinstance(value, _Html) else _text(value)


def _ingest(ingest: Mapping[str, Any]) -> str:
    body = [
        _table(
            ["read", "used", "merged duplicates", "replies dropped", "skipped"],
            [
                [
                    ingest.get("read"),
                    ingest.get("used"),
                    ingest.get("duplicate"),
                    ingest.get("reply"),
                    ingest.get("skipped_total"),
                ]
            ],
        )
    ]
    warnings = list(ingest.get("warnings") or ())
    if ingest.get("overlap_dropped"):
        body.append(_table(["left out as copies of a more detailed input"],
                           [[ingest.get("overlap_dropped")]]))
    if ingest.get("outside_window"):
        body.append(_table(["outside the window"], [[ingest.get("outside_window")]]))
    clusters = ingest.get("clusters") or {}
    if len(clusters) > 1:  # one cluster: nothing to say
        body.append(_table(["cluster", "rows"], sorted(clusters.items(), key=str)))
    if warnings:
        body.append(_table(["warning"], [[w] for w in warnings]))
    skipped = ingest.get("skipped") or {}
    if skipped:
        body.append(_table(["skipped because", "records"], sorted(skipped.items(), key=str)))
    files = ingest.get("files") or {}
    if files:
        copies = any(f.get("overlap_dropped") for f in files.values())
        body.append(
            _table(
                ["file", "format", "read", "used", *(["left out as copies"] if copies else [])],
                [
                    [name, f.get("format"), f.get("read"), f.get("used"),
                     *([f.get("overlap_dropped", 0)] if copies else [])]
                    for name, f in sorted(files.items())
                ],
            )
        )
    return "".join(body)


def _namespaces(report: Mapping[str, Any]) -> str:
    namespaces = report.get("namespaces") or {}
    return _table(
        [
            "namespace",
            "policies",
            "workload policies",
            "ingress rules",
            "egress rules",
            "connections",
            "flagged rules",
        ],
        [
            [
                ns,
                v.get("policies"),
                v.get("workload_policies"),
                v.get("ingress_rules"),
                v.get("egress_rules"),
                v.get("connections"),
                v.get("flagged_rules"),
            ]
            for ns, v in sorted(namespaces.items())
        ],
    )


def _rules(report: Mapping[str, Any]) -> str:
    by_ns: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for rule in report.get("rules") or []:
        by_ns[str(rule.get("namespace"))].append(rule)
    if not by_ns:
        return "<p>No rules.</p>"
    partial = partial_sentence(report)
    out = [f"<p>{_text(partial)}</p>"] if partial else []
    for ns in sorted(by_ns):
        out.append(f"<h3>Namespace {_text(ns)}</h3>")
        out.append(
            _table(
                [
                    "policy",
                    "workload",
                    "direction",
                    "peers",
                    "ports",
                    "connections",
                    "first seen",
                    "last seen",
                    "hours",
                    "flags",
                ],
                [
                    [
                        r.get("policy"),
                        r.get("workload"),
                        r.get("direction"),
                        r.get("peers") or [],
                        r.get("ports") or [],
                        r.get("connections"),
                        _time(r.get("first_seen")),
                        _time(r.get("last_seen")),
                        r.get("windows"),
                        _Html(_flags(r.get("flags") or [])),
                    ]
                    for r in by_ns[ns]
                ],
                caption=f"{plural(len(by_ns[ns]), 'rule')} with their evidence (times in UTC)",
            )
        )
    out.append(_flag_legend(r.get("flags") or [] for r in report.get("rules") or []))
    return "".join(out)


def _flagged(report: Mapping[str, Any]) -> str:
    out = []
    flagged = report.get("flagged") or []
    if flagged:
        out.append(
            _table(
                ["namespace", "policy", "direction", "peers", "ports", "connections", "flags"],
                [
                    [
                        f.get("namespace"),
                        f.get("policy"),
                        f.get("direction"),
                        f.get("peers") or [],
                        f.get("ports") or [],
                        f.get("connections"),
                        _Html(
                            _flags(f.get("flags") or [])
                            + (" <em>(accepted)</em>" if f.get("accepted") else "")
                        ),
                    ]
                    for f in flagged
                ],
                caption="Rules flagged for review",
            )
        )
        accepted = sum(1 for f in flagged if f.get("accepted"))
        if accepted:
            out.append(
                f"<p>{plural(accepted, 'rule')} marked <em>(accepted)</em> "
                f"{'was' if accepted == 1 else 'were'} reviewed and kept by <code>accept</code> "
                "entries of the decisions file: they no longer hold the verdict.</p>"
            )
        out.append(_flag_legend(f.get("flags") or [] for f in flagged))
    else:
        out.append("<p>No rule is flagged.</p>")
    fallbacks = report.get("selector_fallbacks") or []
    if fallbacks:
        out.append(
            "<h3>Selectors to check</h3><p>Workloads without observed labels get the assumed "
            "selector <code>app=&lt;workload&gt;</code>; ambiguous selectors also match another "
            "observed workload.</p>"
        )
        out.append(
            _table(
                ["namespace", "workload", "selector", "source", "ambiguous"],
                [
                    [
                        x.get("namespace"),
                        x.get("workload"),
                        x.get("selector") or {},
                        x.get("source"),
                        bool(x.get("ambiguous")),
                    ]
                    for x in fallbacks
                ],
            )
        )
    invalid = report.get("invalid_labels") or []
    if invalid:
        out.append("<h3>Labels not used (invalid Kubernetes syntax)</h3>")
        out.append(
            _table(
                ["workload", "key", "value"],
                [[x.get("workload"), x.get("key"), x.get("value")] for x in invalid],
            )
        )
    bad_ns = report.get("invalid_namespaces") or []
    if bad_ns:
        out.append("<h3>Namespaces not used (invalid Kubernetes syntax)</h3>")
        out.append(_table(["namespace"], [[n] for n in bad_ns]))
    node_local = report.get("node_local") or []
    if node_local:
        out.append("<h3>Node-local traffic (no rule needed)</h3>")
        out.append(
            _table(
                ["workload", "from", "port", "connections", "why"],
                [
                    [
                        x.get("workload"),
                        x.get("from"),
                        x.get("port"),
                        x.get("connections"),
                        x.get("why"),
                    ]
                    for x in node_local
                ],
            )
        )
    not_expressible = report.get("not_expressible") or []
    if not_expressible:
        out.append("<h3>Not expressible in Kubernetes NetworkPolicy</h3>")
        out.append(
            _table(
                ["source", "destination", "protocol", "connections", "why"],
                [
                    [
                        x.get("source"),
                        x.get("destination"),
                        x.get("protocol"),
                        x.get("connections"),
                        x.get("why"),
                    ]
                    for x in not_expressible
                ],
            )
        )
    return "".join(out)


def _external(report: Mapping[str, Any]) -> str:
    by_class = report.get("external_by_class") or {}
    if not by_class:
        return "<p>No traffic to or from outside addresses.</p>"
    out = [
        _table(
            ["class", "addresses", "connections"],
            [
                [
                    cls,
                    len({str(i.get("address")) for i in items}),
                    sum(int(i.get("connections") or 0) for i in items),
                ]
                for cls, items in sorted(by_class.items())
            ],
        )
    ]
    for cls, items in sorted(by_class.items()):
        out.append(f"<h3>Class {_text(cls)}</h3>")
        out.append(
            _table(
                ["direction", "address", "port", "workload", "connections", "DNS names"],
                [
                    [
                        i.get("direction"),
                        i.get("address"),
                        i.get("port"),
                        i.get("from") or i.get("to"),
                        i.get("connections"),
                        i.get("dns_names") or [],
                    ]
                    for i in items
                ],
            )
        )
    return "".join(out)


def _flows(rows: Sequence[Mapping[str, Any]], with_reason: bool, total: Any) -> str:
    if not rows:
        return "<p>None.</p>"
    headers = ["source", "destination", "port", "connections", "first seen", "last seen"]
    body = [
        [
            _endpoint(d, "src"),
            _endpoint(d, "dst"),
            _port(d),
            d.get("connections"),
            _time(d.get("first_seen")),
            _time(d.get("last_seen")),
        ]
        + ([d.get("reason")] if with_reason else [])
        for d in rows
    ]
    caption = f"{len(rows):,} edges listed (times in UTC)"
    if isinstance(total, int) and total > len(rows):
        caption += f" of {total:,}"
    table = _table(headers + (["reason"] if with_reason else []), body, caption=caption)
    if len(rows) > _FOLD_ROWS:
        return f"<details><summary>Show {len(rows):,} edges</summary>{table}</details>"
    return table


def _verdict(report: Mapping[str, Any]) -> str:
    v = report.get("verdict") or {}
    name = str(v.get("verdict") or "not judged")
    css = {"ready": "ok", "review first": "warn", "not ready": "bad"}.get(name, "")
    reasons = v.get("reasons") or []
    titles = dict(report_sections(report))
    body = [
        f'<p class="verdict"><span class="badge {css}">{_text(name)}</span> '
        + (
            "Nothing found that needs a decision before applying.</p>"
            if not reasons
            else f"{_text(plural(len(reasons), 'reason'))}, each linked to its evidence:</p>"
        )
    ]
    if reasons:
        body.append(
            "<ul>"
            + "".join(
                f"<li><strong>{_text(r.get('level'))}</strong>: {_text(r.get('text'))} "
                f'(<a href="#{_text(r.get("section"))}">'
                f"{_text(titles.get(str(r.get('section')), r.get('section')))}</a>)</li>"
                for r in reasons
            )
            + "</ul>"
        )
    return "".join(body)


def _staged(report: Mapping[str, Any]) -> str:
    staged = report.get("staged_verdicts") or {}
    lines = "".join(f"<li>{_text(w.get('line'))}</li>" for w in staged.get("would_break") or [])
    return (
        "<p>The cluster's verdicts of the staged policies deny these observed flows, so their "
        f"namespaces stay staged:</p><ul>{lines}</ul>"
    )


def _decisions(report: Mapping[str, Any]) -> str:
    d = report.get("decisions") or {}
    items = d.get("items") or []
    body = [
        f"<p>{_text(plural(int(d.get('total') or 0), 'decision'))} from the decisions file: "
        f"{_text(d.get('applied'))} applied, {_text(d.get('stale'))} matched nothing (stale), "
        f"{_text(d.get('expired'))} expired (ignored).</p>"
    ]
    rows = []
    for x in items:
        if x.get("action") == "exclude":
            what = f"workload {x.get('workload')}" if x.get("workload") else (
                f"namespace {x.get('namespace')}"
            )
        else:
            port = ""
            if x.get("protocol") or x.get("port"):
                port = f" {x.get('protocol') or 'any'}/{x.get('port') or '*'}"
            what = f"{x.get('from')} \u2192 {x.get('to')}{port}"
        rows.append([x.get("index"), x.get("action"), what, x.get("status"), x.get("edges"),
                     x.get("expires"), x.get("reason"), x.get("note")])
    body.append(_fold(_table(["#", "action", "what", "status", "edges", "expires", "reason",
                              "note"], rows), len(rows), "decisions"))
    return "".join(body)


def _anomalies(report: Mapping[str, Any]) -> str:
    a = report.get("anomalies") or {}
    groups = a.get("groups") or group_anomalies(a.get("items") or [])
    body = [
        f"<p>{_text(anomalies_sentence(a))} One row per source:</p>",
        _table(
            ["rule", "source", "targets", "edges", "denied", "allowed", "excluded", "ports",
             "reason"],
            [
                [g["rule"], g["source"], g["targets"], g["edges"], g["denied"], g["allowed"],
                 g["excluded"], ", ".join(g["ports"]), group_reason(a, g)]
                for g in groups
            ],
        ),
    ]
    items = a.get("items") or []
    if items:
        table = _table(
            ["rule", "source", "destination", "port", "connections", "verdict", "excluded",
             "reason"],
            [
                [x.get("rule"), x.get("source"), x.get("destination"),
                 f"{x.get('protocol')}/{'*' if x.get('port') is None else x.get('port')}",
                 x.get("connections"), x.get("verdict"), bool(x.get("excluded")), x.get("reason")]
                for x in items
            ],
        )
        body.append(f"<details><summary>Show the {len(items):,} flagged edges listed"
                    f"</summary>{table}</details>")
    return "".join(body)


def _granularity(report: Mapping[str, Any]) -> str:
    levels = (report.get("granularity") or {}).get("levels") or []
    return (
        "<p>Policies and rules if workloads were grouped by behavioural cluster or by namespace "
        "instead of one policy each; unobserved grants are (workload, peer, port) allowances a "
        "workload would get only because another member of its group needed them.</p>"
        + _table(
            ["granularity", "policies", "rules", "unobserved grants", "per observed grant"],
            [[x.get("level"), x.get("policies"), x.get("rules"), x.get("unobserved_grants"),
              _fixed(x.get("over_permissiveness"))] for x in levels],
        )
    )


def _compaction(report: Mapping[str, Any]) -> str:
    shared = report.get("compaction") or []
    return _table(
        ["namespace", "policy", "workloads", "selector", "proof", "added grants"],
        [[x.get("namespace"), x.get("policy"), x.get("workloads") or [], x.get("selector"),
          x.get("proof"), x.get("added_grants")] for x in shared],
    )


def _grouped_flows(groups: Sequence[Mapping[str, Any]], with_reason: bool, what: str) -> str:
    if not groups:
        return "<p>None.</p>"
    headers = ["source", "destination", "ports", "edges", "connections", "first seen",
               "last seen"] + (["reason"] if with_reason else [])
    rows = [
        [g["source"], g["destination"], ", ".join(g["ports"]), g["edges"], g["connections"],
         _time(g.get("first_seen")), _time(g.get("last_seen"))]
        + ([g.get("reason")] if with_reason else [])
        for g in groups
    ]
    caption = (f"{plural(sum(int(g['edges']) for g in groups), 'edge')} in "
               f"{plural(len(groups), 'pair')} of endpoints (times in UTC)")
    table = _table(headers, rows, caption=caption)
    if len(rows) > FOLD_ROWS:
        return f"<details><summary>Show {len(rows):,} {_text(what)}</summary>{table}</details>"
    return table


def _denied(report: Mapping[str, Any]) -> str:
    groups = report.get("denied_groups") or group_flows(report.get("denied") or [])
    if not groups:
        return "<p>None.</p>"
    scans, rest = split_scans(report, groups)
    body = [f"<p>{_text(denied_sentence(report, scans))}</p>"]
    if rest:
        body.append(_grouped_flows(rest, False, "pairs"))
    if scans:
        table = _grouped_flows(scans, False, "pairs")
        if not table.startswith("<details>"):
            summary = f"Show the scanners' {len(scans):,} pairs"
            table = f"<details><summary>{summary}</summary>{table}</details>"
        body.append(table)
    return "".join(body)


def _config(report: Mapping[str, Any]) -> str:
    config = report.get("config") or {}
    return (
        "<details><summary>Show every option</summary>"
        + _table(["option", "value"], [[k, v] for k, v in sorted(config.items())])
        + "</details>"
    )


def report_html(
    report: dict[str, Any], edges: pa.Table | None = None, graph: Any = None
) -> str:
    """Render the report (see ``docs/report.md``) as one self-contained HTML page.

    Parameters
    ----------
    report
        The report dict from :func:`recommender.report.model.build_report` (with ``self_check``
        when the pipeline added one), or the same loaded from ``report.json``.
    edges
        The observed edges (``Recommendation.edges``) to draw the communication graph from;
        without them the graph is drawn from the report's rules, resolving peers through the
        report's selectors.
    graph
        :func:`~recommender.analysis.graph.graph_from_edges` of the same ``edges`` (with their
        denied table and labels), when the caller has built it: drawn instead of building the
        graph again when the report lists no denied flows (the drawing is then the same).

    Returns
    -------
    str
        The page: no scripts, no external resources, no time of its own; every report value
        is HTML-escaped.
    """
    summary = report.get("summary") or {}
    render: dict[str, Any] = {
        "verdict": lambda: _verdict(report),
        "staged": lambda: _staged(report),
        "summary": lambda: _summary(report),
        "decisions": lambda: _decisions(report),
        "self-check": lambda: _self_check(report["self_check"]),
        "holdout": lambda: _holdout(report["holdout"]),
        "anomalies": lambda: _anomalies(report),
        "never-established": lambda: _never_established(report["never_established"]),
        "guardrails": lambda: _guardrails(report["guardrails"]),
        "istio": lambda: _istio(report["istio"]),
        "mesh": lambda: _mesh(report["mesh"]),
        "input": lambda: _ingest(report["ingest"]),
        "graph": lambda: _graph_svg(report, edges, graph),
        "segments": lambda: _segments(report["segments"]),
        "namespaces": lambda: _namespaces(report),
        "rules": lambda: _rules(report),
        "flagged": lambda: _flagged(report),
        "external": lambda: _external(report),
        "denied": lambda: _denied(report),
        "excluded": lambda: _grouped_flows(
            report.get("excluded_groups")
            or group_flows(report.get("excluded") or [], with_reason=True),
            True, "pairs"),
        "granularity": lambda: _granularity(report),
        "compaction": lambda: _compaction(report),
        "config": lambda: _config(report),
    }
    _ = summary
    sections = [(a, t, render[a]()) for a, t in report_sections(report)]
    nav = "".join(f'<li><a href="#{a}">{_text(t)}</a></li>' for a, t, _ in sections)
    version = report.get("report_version")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        "<title>Network policy recommendation</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header><h1>Network policy recommendation</h1>",
        f'<p class="muted">Report version {_text(version)}; the same report as '
        "<code>report.json</code> and <code>report.md</code>.</p>",
        f'<nav aria-label="Sections"><ul>{nav}</ul></nav></header>',
        _problems(report.get("self_check") or {}),
        *(_section(a, t, body) for a, t, body in sections),
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
