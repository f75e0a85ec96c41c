"""``report.md``: the report model rendered for people, section by section.

The sections and their order come from :func:`~recommender.report.sections.report_sections`,
the same list ``report.html`` and ``report.json`` use. Long tables show their first
:data:`~recommender.report.sections.FOLD_ROWS` rows and say how many more ``report.json`` and
``report.html`` hold; values are shown without Python syntax, times to the second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

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
from .text import flag_help, plain, plural, ports_text, when

__all__ = ["report_markdown"]


def _md_escape(text: Any) -> str:
    return plain(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _table(
    headers: list[str],
    rows: list[list[Any]],
    what: str = "rows",
    total: int | None = None,
    limit: int = FOLD_ROWS,
) -> list[str]:
    """A Markdown table of at most ``limit`` rows, then a line with how many more there are
    (of ``total`` when the report itself lists fewer than exist)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows[:limit]]
    count = max(len(rows), total or 0)
    if count > min(limit, len(rows)):
        lines += [
            "",
            f"… {plural(count - min(limit, len(rows)), 'more ' + what[:-1], 'more ' + what)} "
            f"(of {count:,}) in report.html and report.json.",
        ]
    return lines


def _slug(title: str) -> str:
    """The anchor GitHub and most Markdown renderers give a heading: lowercase, punctuation
    other than ``-`` dropped, spaces as ``-`` (``Self-check`` -> ``self-check``)."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _flag_legend(flag_lists: Iterable[Iterable[str]]) -> list[str]:
    seen = sorted({f for flags in flag_lists for f in flags})
    if not seen:
        return []
    return [
        "",
        "Flags: "
        + "; ".join(f"`{f}` {flag_help(f) or '(see docs/report.md)'}" for f in seen)
        + ".",
    ]


def _verdict(report: Mapping[str, Any]) -> list[str]:
    v = report.get("verdict") or {}
    reasons = v.get("reasons") or []
    out = [
        f"**{str(v.get('verdict', 'not judged')).capitalize()}.**"
        + (" Nothing found that needs a decision before applying." if not reasons else "")
    ]
    if reasons:
        titles = dict(report_sections(report))
        out.append("")
        for r in reasons:
            title = titles.get(r["section"], r["section"])
            out.append(f"- {r['level']}: {_md_escape(r['text'])} (see [{title}](#{_slug(title)}))")
    return out


def _staged(report: Mapping[str, Any]) -> list[str]:
    staged = report["staged_verdicts"]
    return [
        "**Staged policies would break wanted traffic:** the cluster's verdicts of the staged "
        "policies deny these observed flows, so their namespaces stay staged.",
        "",
        *(f"- {w['line']}" for w in staged["would_break"]),
    ]


def _summary(report: Mapping[str, Any]) -> list[str]:
    s = report["summary"]
    out = [
        f"Flows from {when(s['first_seen'])} to {when(s['last_seen'])}: "
        f"{plural(s['connection_rows'], 'connection row')}, {plural(s['edges'], 'edge')} between "
        f"{plural(s['workloads'], 'workload')}.",
        "",
        f"**{plural(s['policies'], 'policy', 'policies')}** with **{plural(s['rules'], 'rule')}** "
        f"for {plural(len(s['namespaces_in_scope']), 'namespace')} "
        f"({', '.join(s['namespaces_in_scope']) or 'none'}); "
        f"{plural(s['flagged_rules'], 'rule')} flagged for review; "
        f"{plural(s['denied_edges'], 'denied edge')} never allowed."
        + (
            f" Namespaces without policies (out of scope): "
            f"{', '.join(s['namespaces_out_of_scope'])}."
            if s["namespaces_out_of_scope"]
            else ""
        ),
    ]
    return out


def _decisions(report: Mapping[str, Any]) -> list[str]:
    d = report["decisions"]
    out = [
        f"{plural(d['total'], 'decision')} from the decisions file: {d['applied']} applied, "
        f"{d['stale']} matched nothing (stale), {d['expired']} expired (ignored).",
        "",
    ]
    out += _table(
        ["#", "action", "what", "status", "edges", "reason", "note"],
        [
            [
                x["index"],
                x["action"],
                _decision_what(x),
                x["status"],
                x["edges"],
                x.get("reason") or "",
                x.get("note") or "",
            ]
            for x in d["items"]
        ],
        "decisions",
        limit=50,
    )
    return out


def _decision_what(x: Mapping[str, Any]) -> str:
    if x["action"] == "exclude":
        return (
            f"workload {x['workload']}" if x.get("workload") else f"namespace {x.get('namespace')}"
        )
    port = ""
    if x.get("protocol") or x.get("port"):
        port = f" {x.get('protocol') or 'any'}/{x.get('port') or '*'}"
    return f"{x['from']} → {x['to']}{port}"


def _self_check(report: Mapping[str, Any]) -> list[str]:
    check = report["self_check"]
    over = check["over_permissive"]
    out = [
        "Replayed against these policies with Kubernetes NetworkPolicy semantics, the "
        f"observed traffic is **{check['coverage']:.1%} covered** with "
        f"{plural(check['false_denies'], 'false deny', 'false denies')}; "
        f"{plural(check['denied_in_input_but_allowed'], 'flow')} denied in the input would be "
        f"allowed; {plural(check['not_evaluated_edges'], 'edge')} could not be evaluated (see "
        "`recommend evaluate`).",
    ]
    if over.get("skipped"):
        out.append(f"Over-permissiveness not computed: {over['skipped']}.")
    else:
        out.append(
            f"Over-permissiveness: {over['allowed_unobserved']:,} of {over['candidates']:,} "
            "workload x port pairs never observed are allowed (peers in namespaces without "
            "policies count here)."
        )
        if over.get("estimate"):
            out.append(f"That figure is an estimate, an {over['estimate']}.")
    purposeful = check.get("excluded_on_purpose") or {}
    if purposeful.get("edges"):
        reasons = ", ".join(
            f"{reason} {v['edges']} ({v['denied_edges']} denied)"
            for reason, v in purposeful["by_reason"].items()
        )
        out.append(
            f"Left out on purpose and replayed as their own kind: "
            f"{plural(purposeful['edges'], 'edge')} "
            f"({plural(purposeful['connections'], 'connection')}), "
            f"{purposeful['denied_edges']} of them denied by these policies: {reasons}."
        )
    decided = check.get("decisions")
    if decided:
        out.append(
            f"Decisions, counted apart from the observed evidence: "
            f"{plural(decided['allowed_edges'], 'edge')} allowed by decision "
            f"({decided['allowed_not_allowed']} not allowed by the policies), "
            f"{plural(decided['rejected_edges'], 'observed edge')} rejected "
            f"({decided['rejected_still_allowed']} still allowed by a broader rule)."
        )
    return out


def _holdout(report: Mapping[str, Any]) -> list[str]:
    h = report["holdout"]
    learn, test, churn = h["learn"], h["test"], h["churn"]
    share = f"; the latest {h['holdout']:.0%} of the time span" if h.get("holdout") else ""
    out = [
        f"Policies learned from the flows before {when(h['split_at'])} "
        f"({plural(learn['connection_rows'], 'row')}, {plural(learn['rules'], 'rule')}), replayed "
        f"against the flows from then on ({plural(test['connection_rows'], 'row')}{share}). The "
        "policies above are learned from all flows.",
        "",
        f"- false-deny rate on the later window: **{h['false_deny_rate']:.2%}** "
        f"({h['false_deny_connections']:,} of {h['observed_connections']:,} observed allowed "
        f"connections; {h['false_deny_edges']} of {h['observed_edges']} edges)",
        f"- coverage of the later window: {h['coverage']:.2%}"
        + (
            f"; {plural(h['not_evaluated_edges'], 'edge')} not evaluated"
            if h["not_evaluated_edges"]
            else ""
        ),
        f"- rule churn between the windows: stability **{churn['stability']:.2f}** "
        f"({churn['unchanged']} unchanged, {churn['added']} only in the later window, "
        f"{churn['removed']} only in the earlier one)",
    ]
    if h["false_denies"]:
        out += ["", "Edges of the later window the learned policies deny:", ""]
        out += _table(
            ["source", "destination", "port", "connections", "why"],
            [
                [
                    e["source"],
                    e["destination"],
                    f"{e['protocol']}/{e['port']}" if e["port"] is not None else e["protocol"],
                    e["connections"],
                    e["reason"],
                ]
                for e in h["false_denies"]
            ],
            "edges",
            total=h["false_deny_edges"],
        )
    changed = [("later only", r) for r in churn["added_rules"]] + [
        ("earlier only", r) for r in churn["removed_rules"]
    ]
    if changed:
        out += ["", "Rules that differ between the windows:", ""]
        out += _table(
            ["window", "namespace", "policy", "dir", "peers", "ports"],
            [
                [where, r["namespace"], r["policy"], r["direction"], r["peers"], r["ports"]]
                for where, r in changed
            ],
            "rules",
        )
    return out


def _anomalies(report: Mapping[str, Any]) -> list[str]:
    a = report["anomalies"]
    groups = a.get("groups") or group_anomalies(a["items"])
    out = [f"{anomalies_sentence(a)} One row per source:", ""]
    out += _table(
        ["rule", "source", "targets", "edges", "denied", "allowed", "excluded", "ports", "reason"],
        [
            [
                g["rule"],
                g["source"],
                g["targets"],
                g["edges"],
                g["denied"],
                g["allowed"],
                g["excluded"],
                ports_text(g["ports"], 6),
                group_reason(a, g),
            ]
            for g in groups
        ],
        "sources",
    )
    return out


def _never_established(report: Mapping[str, Any]) -> list[str]:
    never = report["never_established"]
    out = [
        f"{plural(never['edges'], 'edge')} ({plural(never['connections'], 'connection')}) were "
        "tried but never established (resets, unanswered retried SYNs, no answer counted): "
        "they get no rule (`--allow-unestablished` gives them one).",
        "",
    ]
    out += _table(
        ["source", "destination", "port", "attempts", "first seen", "last seen"],
        [
            [x["source"], x["destination"],
             f"{x['protocol']}/{x['port']}" if x["port"] is not None else x["protocol"],
             x["connections"], when(x["first_seen"]), when(x["last_seen"])]
            for x in never["items"]
        ],
        "edges",
        total=never["edges"],
    )  # fmt: skip
    return out


def _guardrails(report: Mapping[str, Any]) -> list[str]:
    g = report["guardrails"]
    out = [
        f"Guardrails **{_md_escape(g['name'])}** ({plural(len(g['guardrails']), 'rule')}, rendered "
        f"as {g['format']} in `_guardrails/`). Observed flows an admin guardrail denies get no "
        "allow rule.",
        "",
        "### Conflicts to resolve",
        "",
    ]
    if not g["conflicts"]:
        out.append("No observed flow is denied by a guardrail.")
    else:
        out += [
            f"{plural(g['conflicts_total'], 'observed edge')} "
            f"({plural(g['conflict_connections'], 'connection')}) are denied by a guardrail: "
            "change the guardrail or the application.",
            "",
        ]
        out += _table(
            ["source", "destination", "port", "connections", "guardrail", "why"],
            [
                [
                    c["source"],
                    c["destination"],
                    f"{c['protocol']}/{c['port']}",
                    c["connections"],
                    c["guardrail"],
                    c["reason"],
                ]
                for c in g["conflicts"]
            ],
            "conflicts",
            total=g["conflicts_total"],
        )
    out += [
        "",
        "### Compliance evidence",
        "",
        "Checks of the whole stack (guardrails and these policies). Each is evidence toward "
        "the controls named, for an assessor to weigh; it is not an assessment and does "
        "not make a system compliant.",
        "",
    ]
    out += _table(
        ["check", "status", "PCI DSS v4", "NIST 800-53", "SOC 2", "GDPR", "evidence"],
        [
            [
                c["title"],
                c["status"].upper(),
                c["controls"].get("pci_dss_v4", []),
                c["controls"].get("nist_800_53", []),
                c["controls"].get("soc2", []),
                c["controls"].get("gdpr", []),
                "; ".join(c["evidence"][:3]),
            ]
            for c in g["compliance"]
        ],
        "checks",
    )
    return out


def _input(report: Mapping[str, Any]) -> list[str]:
    ingest = report["ingest"]
    out = [
        f"{plural(ingest['read'], 'record')} read, {ingest['used']:,} used, "
        f"{ingest['duplicate']:,} merged as duplicates, "
        f"{plural(ingest['reply'], 'reply', 'replies')} dropped, "
        f"{ingest['skipped_total']:,} skipped"
        + (f", {ingest['overlap_dropped']:,} left out as copies of a more detailed input"
           if ingest.get("overlap_dropped") else "")
        + (f", {ingest['outside_window']:,} outside the window"
           if ingest.get("outside_window") else "")
        + "."
    ]
    clusters = ingest.get("clusters") or {}
    if len(clusters) > 1:  # one cluster: nothing to say
        out.append(
            "- clusters: "
            + ", ".join(f"{_md_escape(c)} ({n:,} rows)" for c, n in clusters.items())
        )
    for warning in ingest.get("warnings") or ():
        out.append(f"- warning: {_md_escape(warning)}")
    for reason, count in ingest["skipped"].items():
        out.append(f"- skipped {reason}: {count:,}")
    for reason, count in (ingest.get("outcome_unknown") or {}).items():
        out.append(f"- outcome unknown ({reason}): {count:,}")
    for name, count in (ingest.get("malformed_traces") or {}).items():
        out.append(f"- malformed trace ({name}): {count:,}")
    return out


def _graph(report: Mapping[str, Any], graph_file: str | None) -> list[str]:
    out = []
    if graph_file:
        out += [
            "![Communication graph: workloads by namespace, outside peers by address class]"
            f"({graph_file})",
            "",
        ]
    out.append(
        "`recommend graph FLOWS -o graph.html` writes the whole graph as an interactive page "
        "(or GraphML, JSON, DOT); see docs/graph.md."
    )
    return out


def _segments(report: Mapping[str, Any]) -> list[str]:
    seg = report["segments"]
    out = [
        f"Community detection ({seg['method']}, seed {seg['seed']}) on the graph of allowed "
        f"traffic between workloads: modularity **{seg['modularity']:.2f}** (above about 0.3 "
        f"the workloads form clear groups). Suggested label: `{seg['label_key']}=<segment>`. "
        "Advice only: no policy is emitted from it.",
        "",
    ]
    out += _table(
        ["segment", "members", "namespaces", "why"],
        [
            [s["name"], [m.split(":", 1)[-1] for m in s["members"]], s["namespaces"], s["reason"]]
            for s in seg["segments"]
        ],
        "segments",
    )
    if seg["cross_segment"]:
        crossing = seg["cross_segment"]
        out += [
            "",
            f"{plural(len(crossing), 'flow')} "
            f"({plural(sum(f['connections'] for f in crossing), 'connection')}) cross a "
            "segment boundary; report.html and report.json list them.",
        ]
    return out


def _namespaces(report: Mapping[str, Any]) -> list[str]:
    return _table(
        ["namespace", "policies", "ingress rules", "egress rules", "connections", "flagged"],
        [
            [
                ns,
                v["policies"],
                v["ingress_rules"],
                v["egress_rules"],
                v["connections"],
                v["flagged_rules"],
            ]
            for ns, v in report["namespaces"].items()
        ],
        "namespaces",
        limit=50,
    )


def _rules(report: Mapping[str, Any]) -> list[str]:
    rules = report["rules"]
    partial = partial_sentence(report)
    out = [partial, ""] if partial else []
    out += _table(
        ["namespace", "policy", "dir", "peers", "ports", "connections", "last seen", "flags"],
        [
            [
                r["namespace"],
                r["policy"],
                r["direction"],
                r["peers"],
                r["ports"],
                r["connections"],
                when(r["last_seen"]),
                r["flags"],
            ]
            for r in rules
        ],
        "rules",
        limit=60,
    )
    return out + _flag_legend(r["flags"] for r in rules)


def _flagged(report: Mapping[str, Any]) -> list[str]:
    flagged = report["flagged"]
    out: list[str] = []
    if flagged:
        by_flag: Counter[str] = Counter(f for r in flagged for f in r["flags"])
        out += [
            f"{plural(len(flagged), 'rule')} to look at before applying "
            f"({', '.join(f'{f} {n}' for f, n in sorted(by_flag.items()))}):",
            "",
        ]
        out += _table(
            ["namespace", "policy", "dir", "peers", "ports", "connections", "flags"],
            [
                [
                    r["namespace"],
                    r["policy"],
                    r["direction"],
                    r["peers"],
                    r["ports"],
                    r["connections"],
                    [*r["flags"], "(accepted)"] if r.get("accepted") else r["flags"],
                ]
                for r in flagged
            ],
            "rules",
        )
        accepted = sum(1 for r in flagged if r.get("accepted"))
        if accepted:
            out += [
                f"{plural(accepted, 'rule')} marked (accepted) {'was' if accepted == 1 else 'were'}"
                " reviewed and kept by `accept` entries of the decisions file: "
                f"{'it no longer holds' if accepted == 1 else 'they no longer hold'} the verdict.",
                "",
            ]
        out += _flag_legend(r["flags"] for r in flagged)
    else:
        out.append("No rule is flagged.")
    if report["selector_fallbacks"]:
        out += [
            "",
            "### Selectors to check",
            "",
            "Workloads without observed labels get the assumed selector `app=<workload>`; "
            "ambiguous selectors also match another observed workload.",
            "",
        ]
        out += _table(
            ["namespace", "workload", "selector", "source", "ambiguous"],
            [
                [x["namespace"], x["workload"], x["selector"], x["source"], x["ambiguous"]]
                for x in report["selector_fallbacks"]
            ],
            "selectors",
        )
    if report["node_local"]:
        by_workload: dict[str, dict[str, Any]] = {}
        for x in report["node_local"]:
            g = by_workload.setdefault(x["workload"], {"from": set(), "ports": set(), "n": 0})
            g["from"].add(x["from"])
            g["ports"].add(x["port"])
            g["n"] += int(x["connections"] or 0)
        out += [
            "",
            "### Node-local traffic (no rule needed)",
            "",
            "Traffic from a pod's own node (kubelet probes) is always allowed: "
            + "; ".join(
                f"{w} {', '.join(sorted(g['ports']))} ({plural(g['n'], 'connection')})"
                for w, g in sorted(by_workload.items())
            )
            + ".",
        ]
    if report["not_expressible"]:
        out += ["", "### Not expressible in Kubernetes NetworkPolicy", ""]
        out += _table(
            ["source", "destination", "protocol", "connections", "why"],
            [
                [x["source"], x["destination"], x["protocol"], x["connections"], x["why"]]
                for x in report["not_expressible"]
            ],
            "edges",
        )
    if report.get("invalid_labels") or report.get("invalid_namespaces"):
        out += [
            "",
            f"Not used because of invalid Kubernetes syntax: "
            f"{plural(len(report.get('invalid_labels') or []), 'label')}, "
            f"{plural(len(report.get('invalid_namespaces') or []), 'namespace')} (see "
            "report.json).",
        ]
    return out


def _external(report: Mapping[str, Any]) -> list[str]:
    rows = []
    for cls, items in sorted(report["external_by_class"].items()):
        rows.append(
            [
                cls,
                len({i["address"] for i in items}),
                sum(int(i.get("connections") or 0) for i in items),
            ]
        )
    if len(rows) <= 3:
        return [
            "; ".join(
                f"{plural(n, cls + ' address', cls + ' addresses')} ({plural(c, 'connection')})"
                for cls, n, c in rows
            )
            + "; report.html lists each with its DNS names."
        ]
    return _table(["class", "addresses", "connections"], rows, "classes")


def _denied(report: Mapping[str, Any]) -> list[str]:
    groups = report.get("denied_groups") or group_flows(report["denied"])
    if not groups:
        return ["None."]
    scans, rest = split_scans(report, groups)
    out = [denied_sentence(report, scans)]
    if not rest:
        return out
    out.append("")
    out += _table(
        ["source", "destination", "ports", "edges", "connections"],
        [
            [g["source"], g["destination"], ports_text(g["ports"]), g["edges"], g["connections"]]
            for g in rest
        ],
        "pairs",
    )
    return out


def _excluded(report: Mapping[str, Any]) -> list[str]:
    groups = report.get("excluded_groups") or group_flows(report["excluded"], with_reason=True)
    if not groups:
        return ["None."]
    return _table(
        ["source", "destination", "ports", "edges", "connections", "reason"],
        [
            [
                g["source"],
                g["destination"],
                ports_text(g["ports"]),
                g["edges"],
                g["connections"],
                g["reason"],
            ]
            for g in groups
        ],
        "pairs",
    )


def _granularity(report: Mapping[str, Any]) -> list[str]:
    out = [
        "Policies and rules if workloads were grouped by behavioural cluster or by namespace "
        "instead of one policy each; unobserved grants are (workload, peer, port) allowances a "
        "workload would get only because another member of its group needed them.",
        "",
    ]
    out += _table(
        ["granularity", "policies", "rules", "unobserved grants", "per observed grant"],
        [
            [
                x["level"],
                x["policies"],
                x["rules"],
                x["unobserved_grants"],
                f"{x['over_permissiveness']:.2f}",
            ]
            for x in report["granularity"]["levels"]
        ],
        "levels",
    )
    return out


def _compaction(report: Mapping[str, Any]) -> list[str]:
    return _table(
        ["namespace", "policy", "workloads", "selector", "proof", "added grants"],
        [
            [
                x["namespace"],
                x["policy"],
                x["workloads"],
                x["selector"],
                x["proof"],
                x["added_grants"],
            ]
            for x in report["compaction"]
        ],
        "policies",
    )


def _config(report: Mapping[str, Any]) -> list[str]:
    config = report["config"]
    changed = {k: v for k, v in config.items() if v not in (None, False, [], "")}
    return [
        f"{plural(len(config), 'option')}, every one in report.json and report.html; set: "
        + "; ".join(f"{k}={_md_escape(v)}" for k, v in sorted(changed.items())[:12])
        + ("; …" if len(changed) > 12 else "")
        + "."
    ]


def _istio(report: Mapping[str, Any]) -> list[str]:
    """The flagged AuthorizationPolicy rules and the Istio self-check."""
    section = report["istio"]
    objects = ", ".join(f"{n} {k}" for k, n in section["objects"].items()) or "nothing"
    out = [f"Written: {objects} (trust domain `{section['trust_domain']}`).", ""]
    check = section.get("self_check")
    if check:
        out += [
            f"Self-check with Istio's semantics (after the NetworkPolicies): "
            f"{check['coverage']:.2%} of the observed connections allowed, "
            f"{plural(check['false_denies'], 'false deny', 'false denies')}, "
            f"{plural(check['denied_in_input_but_allowed'], 'denied flow')} allowed.",
            "",
        ]
    if section["flagged_rules"]:
        out += ["Rules to review (annotation `recommender.io/review`):", ""]
        out += _table(
            ["namespace", "policy", "rule", "why"],
            [[r["namespace"], r["policy"], r["rule"], r["flags"]]
             for r in section["flagged_rules"]],
        )  # fmt: skip
    return out


def _mesh(report: Mapping[str, Any]) -> list[str]:
    """What a STRICT PeerAuthentication would refuse (``report["mesh"]``)."""
    m = report["mesh"]
    out = [
        f"A STRICT PeerAuthentication is written for {plural(len(m['namespaces']), 'namespace')}. "
        f"Workloads with no sign of a mesh proxy in the flows: "
        f"{', '.join(m['workloads_without_proxy']) or 'none'}.",
        "",
    ]
    if not m["plain_text"]:
        return [*out, "No observed connection would be refused as plain text."]
    out += [
        f"{plural(m['plain_text_total'], 'observed connection')} arrive in plain text and would "
        "be refused under STRICT: put the source in the mesh (or behind a gateway), or keep "
        "those namespaces PERMISSIVE.",
        "",
    ]
    out += _table(
        ["source", "destination", "port", "connections", "why"],
        [
            [c["source"], c["destination"], f"{c['protocol']}/{c['port']}", c["connections"],
             c["why"]]
            for c in m["plain_text"]
        ],
    )  # fmt: skip
    return out


_RENDER: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "verdict": _verdict,
    "staged": _staged,
    "summary": _summary,
    "decisions": _decisions,
    "self-check": _self_check,
    "holdout": _holdout,
    "anomalies": _anomalies,
    "never-established": _never_established,
    "guardrails": _guardrails,
    "istio": _istio,
    "mesh": _mesh,
    "input": _input,
    "segments": _segments,
    "namespaces": _namespaces,
    "rules": _rules,
    "flagged": _flagged,
    "external": _external,
    "denied": _denied,
    "excluded": _excluded,
    "granularity": _granularity,
    "compaction": _compaction,
    "config": _config,
}


def report_markdown(report: dict[str, Any], graph_file: str | None = None) -> str:
    """``report.md``: the same report for people.

    ``graph_file`` is the communication graph's picture beside it (``graph.svg``), linked
    from the report when given.
    """
    out = ["# Network policy recommendation", ""]
    problems = (report.get("self_check") or {}).get("problems") or []
    if problems:  # first, so that nobody applies these policies without reading it
        out += [f"**Self-check failed: {_md_escape(p['message'])}.**" for p in problems]
        out += ["", "See *Self-check* below; `recommend` exited with status 3.", ""]
    for anchor, title in report_sections(report):
        out += [f"## {title}", ""]
        if anchor == "graph":
            out += _graph(report, graph_file)
        else:
            out += _RENDER[anchor](report)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
