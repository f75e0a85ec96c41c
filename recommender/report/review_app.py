"""``recommend review``: a local web page to review a run and keep the reviewer's decisions.

The page reads a run's output folder (``report.json``, ``graph.svg``) and shows the verdict,
the namespaces, every policy's rules with their evidence and flags, the traffic that was left
out and the graph. Per rule the reviewer *accepts* or *rejects* (a reject writes ``reject``
entries for the rule's edges), per excluded edge *trusts* it, per workload *excludes* it, and
*allows* an edge that was never observed; every change is written to the decisions file
(``docs/decisions.md``) at once and atomically. Given the flows, *re-run* runs the
recommendation again with the decisions, replaces the output folder and shows what changed.

Security: the server listens on 127.0.0.1 only; each start makes a random token that every
request must carry (``?token=``, else 403) and a Host check refuses other names (DNS
rebinding); pages load nothing from outside and are served with a strict
Content-Security-Policy (scripts and styles only from the app itself, no inline script, forms
only to the app). Every value from the report is escaped.

The app is a Starlette application (:func:`review_app`); :func:`serve` runs it with uvicorn.
The re-run is passed in as a function, so this module needs nothing above the report layer.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, quote

from ..errors import ConfigError, InputError, RecommenderError
from ..synthesis.decisions import (
    Decision,
    Decisions,
    load_decisions,
    write_decisions_atomic,
)
from .rule_entries import _rule_key, rule_decisions, rule_id
from .text import flag_help, plural, when

__all__ = [
    "Change",
    "ReviewState",
    "Server",
    "diff_reports",
    "excluded_decision",
    "review_app",
    "rule_decisions",
    "rule_id",
    "serve",
]

#: The Content-Security-Policy of every response: nothing from outside, no inline script.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_STATIC: Final = {
    "cytoscape.min.js": "text/javascript",
    "cytoscape-fcose.js": "text/javascript",
    "cose-base.js": "text/javascript",
    "layout-base.js": "text/javascript",
    "graph.js": "text/javascript",
    "graph.css": "text/css",
    "review.css": "text/css",
}

#: A re-run: given the decisions file, run the recommendation again, replace the output folder
#: and return the new report.
Rerun = Callable[[Path], dict[str, Any]]


def _e(value: Any) -> str:
    return html.escape("\u2014" if value is None else str(value), quote=True)


# --------------------------------------------------------------------------- rules and edges


def _end(row: Mapping[str, Any], side: str) -> str | None:
    kind = row.get(f"{side}_kind")
    ident = row.get(f"{side}_id")
    if kind == "workload":
        return f"{row.get(f'{side}_namespace')}/{ident}"
    if kind in ("external", "host", "remote-node") and ident:
        return str(ident)
    return None


def excluded_decision(row: Mapping[str, Any]) -> Decision | None:
    """The ``trust`` entry that brings an excluded edge back (None when an end has no name a
    decision can hold, such as a cluster entity)."""
    src, dst = _end(row, "src"), _end(row, "dst")
    if src is None or dst is None:
        return None
    port = row.get("dst_port")
    protocol = str(row.get("protocol") or "").upper() or None
    if protocol not in (None, "TCP", "UDP", "SCTP"):
        protocol, port = None, None
    try:
        return Decision("trust", from_=src, to=dst, port=port, protocol=protocol)
    except ConfigError:
        return None


# --------------------------------------------------------------------------- what changed


@dataclass(frozen=True)
class Change:
    """What a re-run changed: the verdict, rules removed and added, the decisions' status."""

    verdict_before: str
    verdict_after: str
    removed: tuple[dict[str, Any], ...]
    added: tuple[dict[str, Any], ...]
    policies_before: int
    policies_after: int
    decisions: dict[str, Any] = field(default_factory=dict)


def diff_reports(before: Mapping[str, Any], after: Mapping[str, Any]) -> Change:
    """Compare two reports' rules (by workload, direction, peers and ports) and verdicts."""
    old = {_rule_key(r): r for r in before.get("rules") or []}
    new = {_rule_key(r): r for r in after.get("rules") or []}
    return Change(
        verdict_before=str((before.get("verdict") or {}).get("verdict", "")),
        verdict_after=str((after.get("verdict") or {}).get("verdict", "")),
        removed=tuple(old[k] for k in sorted(old.keys() - new.keys(), key=repr)),
        added=tuple(new[k] for k in sorted(new.keys() - old.keys(), key=repr)),
        policies_before=int((before.get("summary") or {}).get("policies", 0)),
        policies_after=int((after.get("summary") or {}).get("policies", 0)),
        decisions=dict(after.get("decisions") or {}),
    )


# --------------------------------------------------------------------------- state


@dataclass
class ReviewState:
    """What the app works on: the run's folder, the decisions file and its entries, the
    reviewer's accepted unflagged rules (kept for the session: such a rule needs no entry; a
    flagged rule's acceptance is written as ``accept`` entries), and the last re-run's
    changes."""

    out_dir: Path
    decisions_path: Path
    token: str
    rerun: Rerun | None = None
    report: dict[str, Any] = field(default_factory=dict)
    decisions: Decisions = field(default_factory=Decisions)
    accepted: set[str] = field(default_factory=set)
    change: Change | None = None
    message: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(
        cls, out_dir: Path, decisions_path: Path, rerun: Rerun | None = None
    ) -> ReviewState:
        """Read ``out_dir/report.json`` and the decisions file (an absent file is empty)."""
        state = cls(out_dir, decisions_path, secrets.token_urlsafe(24), rerun)
        state.report = _read_report(out_dir)
        if decisions_path.exists():
            state.decisions = load_decisions(decisions_path)
        return state

    def save(self, decisions: Decisions, message: str) -> None:
        write_decisions_atomic(self.decisions_path, decisions)
        self.decisions = decisions
        self.message = message


def _read_report(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "report.json"
    try:
        report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{path} does not exist: give the folder a run wrote (recommend FLOWS -o DIR)."
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read as a report: {exc}") from None
    if not isinstance(report, dict) or not isinstance(report.get("rules"), list):
        raise InputError(f"{path} is not a recommender report (no rules).")
    return report


# --------------------------------------------------------------------------- pages

_REVIEW_CSS: Final = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--alt:#f6f8fa;--ok:#1a7f37;--warn:#9a6700;
--bad:#cf222e;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg)}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);
padding:10px 24px;z-index:5;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
header h1{font-size:20px;margin:0}
nav a{margin-right:12px}
main{max-width:1280px;margin:0 auto;padding:8px 24px 64px}
h2{font-size:19px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:16px;margin:18px 0 6px;display:flex;gap:10px;align-items:center}
a{color:var(--accent)}
.muted{color:var(--muted);font-size:13px}
.badge{display:inline-block;border-radius:12px;padding:2px 12px;font-size:14px;font-weight:600;
color:#fff}
.v-ready{background:var(--ok)}.v-review{background:var(--warn)}.v-not{background:var(--bad)}
table{border-collapse:collapse;margin:6px 0 12px;font-size:14px;width:100%}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--alt);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.act{white-space:nowrap;width:1%}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
.flag{display:inline-block;background:#fff8c5;border:1px solid #d4a72c;border-radius:4px;
padding:0 5px;margin:1px 2px 1px 0;font-size:13px}
.flag-help{display:block;color:var(--muted);font-size:12px}
form.inline{display:inline;margin:0}
button{font:inherit;font-size:13px;padding:2px 10px;border-radius:6px;border:1px solid #afb8c1;
background:#f6f8fa;cursor:pointer}
button.reject{border-color:#cf222e;color:#cf222e}
button.accept{border-color:#1a7f37;color:#1a7f37}
button.primary{background:var(--accent);border-color:var(--accent);color:#fff;padding:4px 14px}
.state{font-size:13px;font-weight:600}
.state.rejected{color:var(--bad)}.state.accepted{color:var(--ok)}
tr.rejected td{background:#ffebe9}
tr.accepted td{background:#dafbe1}
.message{background:#ddf4ff;border:1px solid #54aeff;border-radius:6px;padding:6px 12px;
margin:10px 0}
.allow-form{display:flex;flex-wrap:wrap;gap:8px;align-items:end}
.allow-form label{display:flex;flex-direction:column;font-size:13px;color:var(--muted)}
.allow-form input,.allow-form select{font:inherit;font-size:14px;padding:3px 6px}
.added td{background:#dafbe1}.removed td{background:#ffebe9}
img.graph{max-width:100%;border:1px solid var(--line);border-radius:6px}
h2,h3,tr{scroll-margin-top:64px}
.nw{white-space:nowrap}
.edges{display:block;color:var(--muted);font-size:12px}
.edges span{display:block}
"""


def _verdict_class(verdict: str) -> str:
    return {"ready": "v-ready", "review first": "v-review"}.get(verdict, "v-not")


class _Page:
    """HTML of the review page for one state."""

    def __init__(self, state: ReviewState) -> None:
        self.s = state
        self.t = quote(state.token)

    def url(self, path: str) -> str:
        return f"{path}?token={self.t}"

    def button(
        self, label: str, fields: Mapping[str, str], cls: str = "", anchor: str = ""
    ) -> str:
        hidden = "".join(
            f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items()
        )
        back = f'<input type="hidden" name="back" value="{_e(anchor)}">' if anchor else ""
        return (
            f'<form class="inline" method="post" action="{self.url("/decide")}">{hidden}{back}'
            f'<button type="submit" class="{cls}">{_e(label)}</button></form>'
        )

    def render(self) -> str:
        r = self.s.report
        verdict = r.get("verdict") or {}
        v = str(verdict.get("verdict", "unknown"))
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>Review: {_e(self.s.out_dir.name)}</title>",
            f'<link rel="stylesheet" href="{self.url("/static/review.css")}">',
            f'<link rel="icon" href="{self.url("/favicon.ico")}">',
            "</head><body>",
            "<header>",
            f"<h1>Review of <code>{_e(self.s.out_dir)}</code></h1>",
            f'<span class="badge {_verdict_class(v)}" id="verdict">{_e(v)}</span>',
            '<nav><a href="#decisions">decisions</a><a href="#namespaces">namespaces</a>'
            '<a href="#policies">policies</a><a href="#excluded">excluded traffic</a>'
            '<a href="#graph">graph</a></nav>',
            "</header><main>",
        ]
        if self.s.message:
            parts.append(f'<p class="message" role="status">{_e(self.s.message)}</p>')
        parts += [
            self.verdict(verdict),
            self.changes(),
            self.decisions(),
            self.namespaces(),
            self.policies(),
            self.excluded(),
            self.graph(),
            "</main></body></html>",
        ]
        return "\n".join(p for p in parts if p)

    def verdict(self, verdict: Mapping[str, Any]) -> str:
        reasons = verdict.get("reasons") or []
        items = "".join(
            f"<li><strong>{_e(x.get('level'))}</strong>: {_e(x.get('text'))} "
            f'<span class="muted">(report section: {_e(x.get("section"))})</span></li>'
            for x in reasons
        )
        return (
            '<h2 id="verdict-reasons">Verdict</h2>'
            + (f"<ul>{items}</ul>" if items else "<p>No reason to wait.</p>")
        )

    def changes(self) -> str:
        c = self.s.change
        if c is None:
            return ""

        def rows(rules: Sequence[Mapping[str, Any]], cls: str) -> str:
            return "".join(
                f'<tr class="{cls}"><td>{_e(cls)}</td><td>{_e(r.get("namespace"))}/'
                f"{_e(r.get('workload'))}</td><td>{_e(r.get('direction'))}</td>"
                f"<td>{_e(', '.join(r.get('peers') or []))}</td>"
                f"<td>{_e(', '.join(r.get('ports') or []) or 'all ports')}</td></tr>"
                for r in rules
            )

        body = rows(c.removed, "removed") + rows(c.added, "added")
        table = (
            "<table id=\"changes-table\"><thead><tr><th></th><th>workload</th><th>direction</th>"
            f"<th>peers</th><th>ports</th></tr></thead><tbody>{body}</tbody></table>"
            if body
            else "<p>No rule changed.</p>"
        )
        d = c.decisions
        status = (
            f"<p>Decisions: {d.get('applied', 0)} applied, {d.get('stale', 0)} matched nothing, "
            f"{d.get('expired', 0)} expired.</p>"
            if d
            else ""
        )
        return (
            '<h2 id="changes">What the re-run changed</h2>'
            f"<p>Verdict: {_e(c.verdict_before)} \u2192 <strong>{_e(c.verdict_after)}</strong>; "
            f"policies: {c.policies_before} \u2192 {c.policies_after}; "
            f"{plural(len(c.removed), 'rule')} removed, {len(c.added)} added.</p>"
            f"{status}{table}"
        )

    def decisions(self) -> str:
        s = self.s
        # the last run's status of each entry, matched by content (indices move on removal)
        extra = ("index", "status", "edges", "connections", "note")
        statuses = {
            json.dumps({k: v for k, v in x.items() if k not in extra}, sort_keys=True): x
            for x in (s.report.get("decisions") or {}).get("items") or []
            if isinstance(x, dict)
        }
        rows = []
        for i, d in enumerate(s.decisions.entries):
            st = statuses.get(json.dumps(d.to_dict(), sort_keys=True))
            shown = str(st.get("status")) if st else "not run yet"
            rows.append(
                f"<tr><td class=\"num\">{i}</td><td><code>{_e(d.describe())}</code></td>"
                f"<td>{_e(d.reason or '')}</td><td>{_e(shown)}</td>"
                f'<td class="act">{self.button("remove", {"do": "remove", "entry": str(i)}, anchor="decisions")}'  # noqa: E501
                "</td></tr>"
            )
        table = (
            "<table id=\"decisions-table\"><thead><tr><th>#</th><th>decision</th><th>reason</th>"
            f"<th>status in the last run</th><th></th></tr></thead><tbody>{''.join(rows)}"
            "</tbody></table>"
            if rows
            else "<p>No decisions yet.</p>"
        )
        rerun = (
            f'<form method="post" action="{self.url("/rerun")}"><button type="submit" '
            'class="primary" id="rerun">Re-run with these decisions</button> '
            '<span class="muted">runs the recommendation again on the flows and replaces '
            "the output folder</span></form>"
            if s.rerun is not None
            else '<p class="muted">Start with <code>--flows FLOWS</code> to re-run from here; '
            "or run <code>recommend FLOWS --decisions FILE</code>.</p>"
        )
        allow = (
            f'<form class="allow-form" method="post" action="{self.url("/decide")}">'
            '<input type="hidden" name="do" value="allow">'
            '<input type="hidden" name="back" value="decisions">'
            '<label>from<input name="from" required placeholder="shop/frontend"></label>'
            '<label>to<input name="to" required placeholder="shop/cart or 10.0.0.0/8"></label>'
            '<label>port<input name="port" required inputmode="numeric" size="6"></label>'
            '<label>protocol<select name="protocol"><option>TCP</option><option>UDP</option>'
            "<option>SCTP</option></select></label>"
            '<label>reason<input name="reason" size="30"></label>'
            '<button type="submit" id="allow-edge">Allow this edge</button></form>'
        )
        return (
            '<h2 id="decisions">Decisions</h2>'
            f"<p>File: <code>{_e(s.decisions_path)}</code> "
            f"({plural(len(s.decisions), 'entry', 'entries')}; every change is written at "
            "once).</p>"
            f"{table}{rerun}<h3>Allow an edge that was not observed</h3>{allow}"
        )

    def namespaces(self) -> str:
        ns = self.s.report.get("namespaces") or {}
        rows = "".join(
            f"<tr><td>{_e(name)}</td><td class=\"num\">{_e(v.get('policies'))}</td>"
            f"<td class=\"num\">{_e(v.get('ingress_rules'))}</td>"
            f"<td class=\"num\">{_e(v.get('egress_rules'))}</td>"
            f"<td class=\"num\">{_e(v.get('flagged_rules'))}</td>"
            f"<td class=\"num\">{_e(v.get('connections'))}</td>"
            f"<td class=\"act\">{self.button('exclude namespace', {'do': 'exclude', 'namespace': str(name)}, anchor='namespaces')}</td></tr>"  # noqa: E501
            for name, v in sorted(ns.items())
            if isinstance(v, dict)
        )
        return (
            '<h2 id="namespaces">Namespaces</h2><table><thead><tr><th>namespace</th>'
            "<th>policies</th><th>ingress rules</th><th>egress rules</th><th>flagged</th>"
            f"<th>connections</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        )

    def rule_state(self, rule: Mapping[str, Any], rid: str) -> str:
        wanted = rule_decisions(rule, self.s.report)
        if wanted and all(d in self.s.decisions.entries for d in wanted):
            return "rejected"
        if rule.get("flags"):
            kept = rule_decisions(rule, self.s.report, "accept")
            if rule.get("accepted") or (
                kept and all(d in self.s.decisions.entries for d in kept)
            ):
                return "accepted"
        return "accepted" if rid in self.s.accepted else ""

    def policies(self) -> str:
        r = self.s.report
        by_workload: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rule in r.get("rules") or []:
            key = (str(rule.get("namespace")), str(rule.get("workload")))
            by_workload.setdefault(key, []).append(rule)
        excluded = {d.workload for d in self.s.decisions if d.action == "exclude"}
        out = ['<h2 id="policies">Policies and rules</h2>',
               '<p class="muted">Accept keeps a rule: for a flagged rule it writes an '
               "<code>accept</code> entry for each of its edges, so the next run no longer asks "
               "about it (until it allows a new edge or gains a flag); reject writes a "
               "<code>reject</code> entry for each of its edges, so the next run denies them."
               "</p>"]  # fmt: skip
        for (ns, wl), rules in sorted(by_workload.items()):
            policy = rules[0].get("policy")
            anchor = f"w-{hashlib.sha256(f'{ns}/{wl}'.encode()).hexdigest()[:10]}"
            exclude = (
                '<span class="state rejected">excluded</span>'
                if f"{ns}/{wl}" in excluded
                else self.button(
                    "exclude workload", {"do": "exclude", "workload": f"{ns}/{wl}"}, anchor=anchor
                )
            )
            out.append(
                f'<h3 id="{anchor}">{_e(ns)}/{_e(wl)} <span class="muted">policy '
                f"<code>{_e(policy)}</code></span>{exclude}</h3>"
            )
            rows = []
            for rule in rules:
                rid = rule_id(rule)
                state = self.rule_state(rule, rid)
                # the edges the rule stands for: what a reject writes
                entries = rule_decisions(rule, self.s.report)
                shown = [d.describe().removeprefix("reject ") for d in entries[:6]]
                if len(entries) > 6:
                    shown.append(f"and {len(entries) - 6} more")
                edges = "".join(f"<span>{_e(x)}</span>" for x in shown)
                flags = "".join(
                    f'<span class="flag">{_e(f)}</span>'
                    + (f'<span class="flag-help">{_e(flag_help(str(f)))}</span>'
                       if flag_help(str(f)) else "")
                    for f in rule.get("flags") or []
                )  # fmt: skip
                if not entries:
                    actions = '<span class="muted">no decision can name its peers</span>'
                elif state == "rejected":
                    actions = self.button("undo reject", {"do": "accept", "rule": rid}, "accept",
                                          anchor=f"r-{rid}")  # fmt: skip
                elif state == "accepted" and rule.get("flags"):
                    actions = self.button("undo accept", {"do": "unaccept", "rule": rid},
                                          "reject", anchor=f"r-{rid}")  # fmt: skip
                else:
                    actions = (
                        self.button("accept", {"do": "accept", "rule": rid}, "accept",
                                    anchor=f"r-{rid}")
                        + " "
                        + self.button("reject", {"do": "reject", "rule": rid}, "reject",
                                      anchor=f"r-{rid}")
                    )  # fmt: skip
                rows.append(
                    f'<tr id="r-{rid}" class="{state}" data-rule="{rid}">'
                    f"<td>{_e(rule.get('direction'))}</td>"
                    f"<td>{_e(', '.join(str(p) for p in rule.get('peers') or []))}"
                    f'<span class="edges">{edges}</span></td>'
                    f"<td>{_e(', '.join(str(p) for p in rule.get('ports') or []) or 'all ports')}"
                    f"</td><td class=\"num\">{_e(rule.get('connections'))}</td>"
                    f'<td><span class="nw">{_e(when(rule.get("first_seen")))}</span> \u2013 '
                    f'<span class="nw">{_e(when(rule.get("last_seen")))}</span>'
                    + (f' <span class="muted">in {plural(int(rule["windows"]), "hour window")}'
                       "</span>" if isinstance(rule.get("windows"), int) else "")
                    + "</td>"
                    f"<td>{flags}</td>"
                    f'<td><span class="state {state}">{_e(state)}</span></td>'
                    f'<td class="act">{actions}</td></tr>'
                )
            out.append(
                "<table><thead><tr><th>direction</th><th>peers</th><th>ports</th>"
                "<th>connections</th><th>seen</th><th>flags</th><th>review</th><th></th></tr>"
                f"</thead><tbody>{''.join(rows)}</tbody></table>"
            )
        if not by_workload:
            out.append("<p>No rules.</p>")
        return "".join(out)

    def excluded(self) -> str:
        rows = []
        for i, row in enumerate(self.s.report.get("excluded") or []):
            d = excluded_decision(row)
            port = row.get("dst_port")
            src = _end(row, "src") or f"{row.get('src_kind')} {row.get('src_id')}"
            dst = _end(row, "dst") or f"{row.get('dst_kind')} {row.get('dst_id')}"
            if d is None:
                action = '<span class="muted">no decision can name this peer</span>'
            elif d in self.s.decisions.entries:
                action = '<span class="state accepted">trusted</span>'
            else:
                action = self.button("trust", {"do": "trust", "excluded": str(i)},
                                     anchor="excluded")  # fmt: skip
            rows.append(
                f"<tr><td>{_e(src)}</td><td>{_e(dst)}</td>"
                f"<td>{_e(row.get('protocol'))}/{_e('*' if port is None else port)}</td>"
                f"<td class=\"num\">{_e(row.get('connections'))}</td>"
                f"<td>{_e(row.get('reason'))}</td><td class=\"act\">{action}</td></tr>"
            )
        denied = (self.s.report.get("summary") or {}).get("denied_edges", 0)
        intro = (
            '<p class="muted">Allowed edges the run left out (anomaly screening, '
            "never-established connections, guardrail conflicts, decisions). Trust writes a "
            "<code>trust</code> entry so the next run learns the edge. Denied flows "
            f"({_e(denied)} edges) never become rules and are listed in the report.</p>"
        )
        table = (
            "<table><thead><tr><th>from</th><th>to</th><th>port</th><th>connections</th>"
            f"<th>why</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            if rows
            else "<p>No allowed traffic was left out.</p>"
        )
        return f'<h2 id="excluded">Excluded traffic</h2>{intro}{table}'

    def graph(self) -> str:
        picture = (
            f'<p><img class="graph" src="{self.url("/graph.svg")}" '
            'alt="communication graph: workloads by namespace, outside peers by address class">'
            "</p>"
            if (self.s.out_dir / "graph.svg").is_file()
            else ""
        )
        return (
            '<h2 id="graph">Graph</h2>'
            f'<p><a href="{self.url("/graph")}" id="open-graph">Open the interactive graph</a> '
            '<span class="muted">(drawn from the rules and the denied flows of this run)</span>'
            f"</p>{picture}"
        )


def _one_node_per_address(graph: Any) -> Any:
    """Merge a rule's single-address ipBlock node (``external:10.0.0.1/32``) into the node a
    denied flow gave the same address (a node, a cluster entity): one address, one box; the
    other single-address blocks are labelled with the address alone."""
    by_address: dict[str, str] = {}
    for node, address in graph.nodes(data="address"):
        if address:
            by_address.setdefault(str(address), node)
    for node in sorted(graph.nodes):
        if not node.startswith("external:"):
            continue
        block = node[len("external:") :].split(" ", 1)[0]
        address, _, bits = block.partition("/")
        other = by_address.get(address)
        if bits not in ("32", "128"):
            continue
        if other is None or other == node:
            graph.nodes[node]["label"] = address  # one address: no /32
            continue
        for src, dst, key, data in list(graph.edges(keys=True, data=True)):
            if node in (src, dst):
                graph.add_edge(other if src == node else src, other if dst == node else dst,
                               key=key, **data)  # fmt: skip
        graph.remove_node(node)
    return graph


def _graph_page(state: ReviewState) -> str:
    """The interactive graph of the run's rules and denied flows, scripts from the app."""
    import networkx as nx

    from ..analysis.graph import graph_from_edges
    from .graph_html import VENDORED, graph_widget
    from .html import _rules_graph

    report = state.report
    graph = _one_node_per_address(
        nx.compose(_rules_graph(report), graph_from_edges(None, report.get("denied") or []))
    )
    in_scope = (report.get("summary") or {}).get("namespaces_in_scope") or []
    widget = graph_widget(graph, in_scope=[str(n) for n in in_scope], title="Graph of the run")
    t = quote(state.token)
    scripts = "".join(
        f'<script src="/static/{name}?token={t}"></script>' for name in (*VENDORED, "graph.js")
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>Graph of the run</title>"
        # the id keeps Cytoscape from adding an inline <style> (the CSP allows none)
        f'<link rel="stylesheet" id="__________cytoscape_stylesheet" '
        f'href="/static/graph.css?token={t}">'
        f'<link rel="stylesheet" href="/static/review.css?token={t}">'
        f'<link rel="icon" href="/favicon.ico?token={t}">'
        '</head><body class="graph-page">'
        f"{widget.body}{widget.data}{scripts}</body></html>"
    )


# --------------------------------------------------------------------------- the app


def _form(body: bytes) -> dict[str, str]:
    values = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in values.items()}


def _decide(state: ReviewState, form: Mapping[str, str]) -> str:
    """Apply one action of the page to the decisions file; return the message to show."""
    what = form.get("do", "")
    decisions = state.decisions
    rules = {rule_id(r): r for r in state.report.get("rules") or []}
    if what in ("reject", "accept", "unaccept"):
        rule = rules.get(form.get("rule", ""))
        if rule is None:
            raise InputError("No such rule in this report (was the page reloaded after a re-run?).")
        wanted = rule_decisions(rule, state.report)
        kept = rule_decisions(rule, state.report, "accept") if rule.get("flags") else []
        name = f"{rule.get('namespace')}/{rule.get('workload')} {rule.get('direction')}"
        if what == "reject":
            state.accepted.discard(rule_id(rule))
            for d in kept:
                decisions = decisions.without_entry(d)
            for d in wanted:
                decisions = decisions.with_entry(d)
            state.save(decisions, f"Rejected a rule of {name}: {plural(len(wanted), 'entry', 'entries')} written.")  # noqa: E501
        elif what == "unaccept":
            state.accepted.discard(rule_id(rule))
            rule.pop("accepted", None)
            for d in kept:
                decisions = decisions.without_entry(d)
            if decisions != state.decisions:
                state.save(decisions, f"Took back the acceptance of a rule of {name}.")
            else:
                state.message = f"The rule of {name} is no longer accepted (nothing to write)."
        else:
            for d in wanted:
                decisions = decisions.without_entry(d)
            for d in kept:  # a flagged rule: the next run must know it was reviewed
                decisions = decisions.with_entry(d)
            state.accepted.add(rule_id(rule))
            if kept:
                state.save(
                    decisions,
                    f"Accepted a rule of {name}: "
                    f"{plural(len(kept), 'accept entry', 'accept entries')} written; the next "
                    "run no longer flags it for review.",
                )
            elif decisions != state.decisions:
                state.save(decisions, f"Accepted a rule of {name}: its reject entries removed.")
            else:
                state.message = f"Accepted a rule of {name} (nothing to write)."
        return state.message
    if what == "trust":
        rows = state.report.get("excluded") or []
        index = int(form.get("excluded", "-1")) if form.get("excluded", "").isdigit() else -1
        if not 0 <= index < len(rows):
            raise InputError("No such excluded edge in this report.")
        trust = excluded_decision(rows[index])
        if trust is None:
            raise InputError("This edge has an end no decision can name.")
        state.save(decisions.with_entry(trust), f"Trusted: {trust.describe()}.")
        return state.message
    if what == "exclude":
        if form.get("workload"):
            d = Decision("exclude", workload=form["workload"])
        else:
            d = Decision("exclude", namespace=form.get("namespace") or None)
        state.save(decisions.with_entry(d), f"Written: {d.describe()}.")
        return state.message
    if what == "allow":
        port = form.get("port", "").strip()
        if not port.isdigit():
            raise ConfigError("allow: the port must be a number (1-65535).")
        d = Decision(
            "allow",
            from_=form.get("from", "").strip() or None,
            to=form.get("to", "").strip() or None,
            port=int(port),
            protocol=form.get("protocol", "TCP").strip().upper() or "TCP",
            reason=form.get("reason", "").strip() or None,
        )
        state.save(decisions.with_entry(d), f"Written: {d.describe()}.")
        return state.message
    if what == "remove":
        index = int(form.get("entry", "-1")) if form.get("entry", "").isdigit() else -1
        if not 0 <= index < len(decisions):
            raise InputError("No such decision in the file.")
        gone = decisions.entries[index]
        rest = Decisions(tuple(d for i, d in enumerate(decisions.entries) if i != index))
        state.save(rest, f"Removed: {gone.describe()}.")
        return state.message
    raise InputError(f"Unknown action {what[:40]!r}.")


def review_app(state: ReviewState, allowed_hosts: Iterable[str] = ()) -> Any:
    """The Starlette application over ``state``.

    ``allowed_hosts``: the Host headers accepted (``127.0.0.1:PORT``, ``localhost:PORT``);
    empty accepts any (for tests with a test client).
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send

    hosts = {h.lower() for h in allowed_hosts}

    def back(request: Request, anchor: str = "") -> RedirectResponse:
        target = f"/?token={quote(state.token)}" + (f"#{quote(anchor)}" if anchor else "")
        return RedirectResponse(target, status_code=303)

    async def index(request: Request) -> Response:
        return HTMLResponse(_Page(state).render())

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return PlainTextResponse("not found", status_code=404)
        if name == "review.css":
            text = _REVIEW_CSS + ".graph-page{margin:0;height:100vh}"
        else:
            from .graph_html import static_text

            text = static_text(name)
            if name == "graph.css":
                text += ".__________cytoscape_container{position:relative}"
        return Response(text, media_type=_STATIC[name])

    async def graph_svg(request: Request) -> Response:
        path = state.out_dir / "graph.svg"
        if not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return Response(path.read_bytes(), media_type="image/svg+xml")

    async def graph(request: Request) -> Response:
        return HTMLResponse(await run_in_threadpool(_graph_page, state))

    async def decide(request: Request) -> Response:
        form = _form(await request.body())
        with state.lock:
            try:
                _decide(state, form)
            except RecommenderError as exc:
                state.message = f"Not written: {exc}"
            except Exception as exc:  # a bug: said on the page, never a traceback
                if os.environ.get("RECOMMENDER_DEBUG"):
                    raise
                state.message = (
                    f"Not written: an internal error ({type(exc).__name__}: {exc}). This is a "
                    "bug; restart with RECOMMENDER_DEBUG=1 for the traceback and report it."
                )
        return back(request, form.get("back", ""))

    def _rerun() -> None:
        if state.rerun is None:
            state.message = "Re-run needs --flows."
            return
        before = state.report
        try:
            after = state.rerun(state.decisions_path)
        except RecommenderError as exc:
            state.message = f"The re-run failed: {exc}"
            return
        except Exception as exc:  # a bug: said on the page, never a traceback
            if os.environ.get("RECOMMENDER_DEBUG"):
                raise
            state.message = (
                f"The re-run failed with an internal error ({type(exc).__name__}: {exc}). This "
                "is a bug; restart with RECOMMENDER_DEBUG=1 for the traceback and report it."
            )
            return
        state.report = after
        state.change = diff_reports(before, after)
        state.accepted.clear()
        state.message = (
            f"Re-ran with {plural(len(state.decisions), 'decision')}: verdict "
            f"{state.change.verdict_after}, {plural(len(state.change.removed), 'rule')} removed, "
            f"{len(state.change.added)} added."
        )

    async def rerun(request: Request) -> Response:
        def run() -> None:
            with state.lock:
                _rerun()

        await run_in_threadpool(run)
        return back(request, "changes")

    async def favicon(request: Request) -> Response:
        return Response(b"", status_code=204)

    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/graph", graph),
        Route("/graph.svg", graph_svg),
        Route("/static/{name}", static),
        Route("/decide", decide, methods=["POST"]),
        Route("/rerun", rerun, methods=["POST"]),
    ]
    inner = Starlette(routes=routes)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        request = Request(scope)
        host = request.headers.get("host", "").lower()
        if hosts and host not in hosts:
            response: ASGIApp = PlainTextResponse("forbidden: unknown host", status_code=403)
        elif not secrets.compare_digest(
            request.query_params.get("token", "").encode(), state.token.encode()
        ):
            response = PlainTextResponse(
                "forbidden: open the address `recommend review` printed (it holds the token)",
                status_code=403,
            )
        else:
            response = inner

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                    (b"x-frame-options", b"DENY"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await response(scope, receive, send_with_headers)

    return app


@dataclass
class Server:
    """A running review server (:func:`serve`): its address and how to stop it."""

    url: str
    port: int
    stop: Callable[[], None]
    thread: threading.Thread | None = None


def serve(
    state: ReviewState,
    port: int = 0,
    *,
    background: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> Server:
    """Serve the app on 127.0.0.1 (``port`` 0: a free port the system picks).

    With ``background`` the server runs in a thread and this returns at once (tests);
    otherwise it blocks until interrupted. ``on_ready`` gets the address with the token.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"Cannot listen on 127.0.0.1:{port}: {exc.strerror}; pick another "
                          "--port, or leave it out for a free one.") from None  # fmt: skip
    sock.listen(128)  # connections wait from now on, before the server starts accepting
    bound = int(sock.getsockname()[1])
    hosts = (f"127.0.0.1:{bound}", f"localhost:{bound}")
    app = review_app(state, allowed_hosts=hosts)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    url = f"http://127.0.0.1:{bound}/?token={quote(state.token)}"

    def stop() -> None:
        server.should_exit = True

    if background:
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        handle = Server(url, bound, stop, thread)
    else:
        handle = Server(url, bound, stop)
    if on_ready is not None:
        on_ready(url)
    if not background:
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
    return handle

