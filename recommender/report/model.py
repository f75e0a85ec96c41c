"""The recommendation report: a JSON-ready dict (``report.json``) and its Markdown rendering.

The report explains every decision: the ingest ledger, what became a rule and on what
evidence, what was flagged, what needed no rule and why, what could not be expressed, which
flows were denied, and where external traffic goes by address class. It holds no wall-clock
time, so the same input gives the same bytes. The schema is documented in ``docs/report.md``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict
from datetime import datetime
from typing import Any, Final

import pyarrow as pa

from ..aggregate.edges import EDGE_KEY, EdgeTables
from ..config import RecommendConfig
from ..policy.model import PolicySet
from ..synthesis.synthesizer import Findings

__all__ = ["REPORT_VERSION", "build_report", "istio_section", "report_json", "report_markdown"]

REPORT_VERSION: Final = "1"
_MAX_LISTED: Final = 200


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _rows(table: pa.Table, limit: int = _MAX_LISTED) -> list[dict[str, Any]]:
    keep = [
        *EDGE_KEY,
        "connections",
        "first_seen",
        "last_seen",
    ]
    extra = [c for c in ("reason",) if c in table.column_names]
    out = []
    for row in table.select(keep + extra).slice(0, limit).to_pylist():
        out.append({k: _iso(v) for k, v in row.items()})
    return out


def never_established(tables: EdgeTables, limit: int = _MAX_LISTED) -> dict[str, Any]:
    """The report's ``never_established`` section: edges whose connections were all attempted
    and none established (excluded with reason ``never-established``), with their counts."""
    excluded = tables.excluded
    if excluded.num_rows:
        import pyarrow.compute as pc

        excluded = excluded.filter(pc.equal(excluded.column("reason"), "never-established"))
    items = []
    for row in excluded.select(
        [*EDGE_KEY, "connections", "first_seen", "last_seen"]
    ).to_pylist():
        src = (
            f"{row['src_namespace']}/{row['src_id']}"
            if row["src_kind"] == "workload"
            else f"{row['src_kind']}:{row['src_id']}"
        )
        dst = (
            f"{row['dst_namespace']}/{row['dst_id']}"
            if row["dst_kind"] == "workload"
            else f"{row['dst_kind']}:{row['dst_id']}"
        )
        items.append(
            {
                "source": src,
                "destination": dst,
                "protocol": row["protocol"],
                "port": row["dst_port"],
                "connections": int(row["connections"] or 0),
                "first_seen": _iso(row["first_seen"]),
                "last_seen": _iso(row["last_seen"]),
            }
        )
    items.sort(key=lambda x: (-x["connections"], x["source"], x["destination"], x["protocol"],
                              -1 if x["port"] is None else x["port"]))  # fmt: skip
    return {
        "edges": len(items),
        "connections": sum(x["connections"] for x in items),
        "items": items[:limit],
    }


#: Istio options, listed only in runs that write the Istio dialect.
_ISTIO_OPTIONS: Final = ("trust_domain", "mtls")


def _config_dict(config: RecommendConfig) -> dict[str, Any]:
    data = asdict(config)
    data.pop("extra", None)
    if "istio" not in config.dialects:
        for name in _ISTIO_OPTIONS:
            data.pop(name, None)
    return {k: (list(v) if isinstance(v, tuple) else _iso(v)) for k, v in sorted(data.items())}


def build_report(
    policy_set: PolicySet,
    findings: Findings,
    tables: EdgeTables,
    config: RecommendConfig,
    ledger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report (see ``docs/report.md`` for its schema)."""
    rules = findings.rules
    per_ns: dict[str, dict[str, Any]] = {}
    rules_by_ns: dict[str, list[Any]] = defaultdict(list)
    for r in rules:
        rules_by_ns[r.namespace].append(r)
    policies_by_ns: dict[str, list[Any]] = defaultdict(list)
    for p in policy_set.policies:
        policies_by_ns[p.namespace].append(p)
    for ns in findings.namespaces_in_scope:
        policies = policies_by_ns.get(ns, [])
        ns_rules = rules_by_ns.get(ns, [])
        per_ns[ns] = {
            "policies": len(policies),
            "workload_policies": sum(1 for p in policies if p.name != "default-deny"),
            "ingress_rules": sum(1 for r in ns_rules if r.direction == "ingress"),
            "egress_rules": sum(1 for r in ns_rules if r.direction == "egress"),
            "connections": sum(r.connections for r in ns_rules),
            "flagged_rules": sum(1 for r in ns_rules if r.flags),
        }
    flagged = [
        {
            "namespace": r.namespace,
            "policy": r.policy,
            "direction": r.direction,
            "peers": r.peers,
            "ports": r.ports,
            "connections": r.connections,
            "flags": r.flags,
        }
        for r in rules
        if r.flags
    ]
    selectors = []
    for (ns, workload), choice in sorted(findings.selectors.items()):
        selectors.append(
            {
                "namespace": ns,
                "workload": workload,
                "selector": dict(choice.selector.match_labels),
                "source": choice.source,
                "ambiguous": choice.ambiguous,
            }
        )
    external: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in sorted(
        findings.external, key=lambda x: (x["class"], x["direction"], x["address"], x["port"])
    ):
        external[item["class"]].append(item)
    denied_connections = (
        int(sum(tables.denied["connections"].to_pylist())) if tables.denied.num_rows else 0
    )
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "summary": {
            "connection_rows": tables.rows_used,
            "first_seen": _iso(tables.first_seen),
            "last_seen": _iso(tables.last_seen),
            "namespaces_in_scope": findings.namespaces_in_scope,
            "namespaces_out_of_scope": findings.namespaces_out_of_scope,
            "workloads": len(findings.selectors),
            "edges": tables.edges.num_rows,
            "policies": len(policy_set),
            "rules": len(rules),
            "flagged_rules": len(flagged),
            "denied_edges": tables.denied.num_rows,
            "denied_connections": denied_connections,
            "excluded_edges": tables.excluded.num_rows,
        },
        "config": _config_dict(config),
        "ingest": ledger,
        "namespaces": per_ns,
        "selectors": selectors,
        "rules": [{**{k: _iso(v) for k, v in asdict(r).items()}} for r in rules],
        "flagged": flagged,
        "selector_fallbacks": [s for s in selectors if s["source"] != "labels" or s["ambiguous"]],
        "node_local": findings.node_local,
        "not_expressible": findings.not_expressible,
        "invalid_labels": findings.invalid_labels,
        "invalid_namespaces": findings.invalid_namespaces,
        "external_by_class": {k: external[k] for k in sorted(external)},
        "denied": _rows(tables.denied),
        "excluded": _rows(tables.excluded),
        "never_established": never_established(tables),
    }
    return report


def report_json(report: dict[str, Any]) -> str:
    """``report.json``: sorted keys, two-space indent, a final newline."""
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines


def _holdout_markdown(h: dict[str, Any]) -> list[str]:
    """The *Held-out validation* section (``report["holdout"]``)."""
    learn, test, churn = h["learn"], h["test"], h["churn"]
    share = f"; the latest {h['holdout']:.0%} of the time span" if h.get("holdout") else ""
    out = [
        "## Held-out validation",
        "",
        f"Policies learned from the flows before {h['split_at']} ({learn['connection_rows']:,} "
        f"rows, {learn['rules']} rules), replayed against the flows from then on "
        f"({test['connection_rows']:,} rows{share}). The policies above are learned from all "
        "flows.",
        "",
        f"- false-deny rate on the later window: **{h['false_deny_rate']:.2%}** "
        f"({h['false_deny_connections']:,} of {h['observed_connections']:,} observed allowed "
        f"connections; {h['false_deny_edges']} of {h['observed_edges']} edges)",
        f"- coverage of the later window: {h['coverage']:.2%}"
        + (f"; {h['not_evaluated_edges']} edges not evaluated" if h["not_evaluated_edges"] else ""),
        f"- rule churn between the windows: stability **{churn['stability']:.2f}** "
        f"({churn['unchanged']} rules unchanged, {churn['added']} only in the later window, "
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
                for e in h["false_denies"][:20]
            ],
        )
    changed = [("later only", r) for r in churn["added_rules"]] + [
        ("earlier only", r) for r in churn["removed_rules"]
    ]
    if changed:
        out += ["", "Rules that differ between the windows:", ""]
        out += _table(
            ["window", "namespace", "policy", "dir", "peers", "ports"],
            [
                [
                    where,
                    r["namespace"],
                    r["policy"],
                    r["direction"],
                    ", ".join(r["peers"]),
                    ", ".join(r["ports"]),
                ]
                for where, r in changed[:40]
            ],
        )
    return [*out, ""]


def _anomalies_markdown(a: dict[str, Any]) -> list[str]:
    """The *Anomalies* section (``report["anomalies"]``, see ``docs/clustering.md``)."""
    counts = ", ".join(f"{rule} {n}" for rule, n in a["by_rule"].items())
    fate = (
        "kept in the allow rules (`trust_all_flows`)"
        if a["trust_all_flows"]
        else f"left out of the allow rules ({a['excluded_connections']:,} connections)"
    )
    out = [
        "## Anomalies (possible scanning or lateral movement)",
        "",
        f"{a['flagged']} edges flagged ({counts}); the {a['allowed_edges']} allowed in the input "
        f"are {fate}. Denied ones never get a rule.",
        "",
    ]
    scans = a.get("scans") or []
    if scans:
        out += ["Scanning sources, one finding each:", ""]
        out += [f"- {_md_escape(x['summary'])}" for x in scans]
        out.append("")
    items = [x for x in a["items"] if x["rule"] != "scan"]
    if not items:
        return [*out, "(Every scanned edge, with its verdict, is listed in report.json.)", ""]
    out += _table(
        ["rule", "source", "destination", "port", "connections", "verdict", "excluded", "reason"],
        [
            [
                x["rule"],
                x["source"],
                x["destination"],
                f"{x['protocol']}/{x['port']}" if x["port"] is not None else x["protocol"],
                x["connections"],
                x["verdict"],
                "yes" if x["excluded"] else "no",
                x["reason"],
            ]
            for x in items[:50]
        ],
    )
    if len(items) > 50:
        out.append(f"\n({len(items) - 50} more in report.json, up to 200 listed there.)")
    return [*out, ""]


def _clusters_markdown(report: dict[str, Any]) -> list[str]:
    """The *Granularity* and *Shared policies* sections (see ``docs/clustering.md``)."""
    out: list[str] = []
    granularity = report.get("granularity")
    if granularity and granularity["levels"]:
        out += [
            "## Granularity",
            "",
            "Policies and rules if workloads were grouped by behavioural cluster or by "
            "namespace instead of one policy each; unobserved grants are (workload, peer, port) "
            "allowances a workload would get only because another member of its group needed "
            "them.",
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
                for x in granularity["levels"]
            ],
        )
        out.append("")
    shared = report.get("compaction")
    if shared:
        out += ["## Shared policies (compaction)", ""]
        out += _table(
            ["namespace", "policy", "workloads", "selector", "proof", "added grants"],
            [
                [
                    x["namespace"],
                    x["policy"],
                    ", ".join(x["workloads"]),
                    x["selector"],
                    x["proof"],
                    x["added_grants"],
                ]
                for x in shared
            ],
        )
        out.append("")
    return out


def istio_section(manifests: list[dict[str, Any]], trust_domain: str) -> dict[str, Any]:
    """The report's ``istio`` section: what the Istio dialect wrote and which rules need a
    human eye (the ``recommender.io/review`` annotation of each AuthorizationPolicy)."""
    kinds: dict[str, int] = {}
    flagged = []
    for manifest in manifests:
        kinds[manifest["kind"]] = kinds.get(manifest["kind"], 0) + 1
        metadata = manifest["metadata"]
        review = (metadata.get("annotations") or {}).get("recommender.io/review")
        for item in review.split("; rule ") if review else ():
            index, _, flags = item.removeprefix("rule ").partition(": ")
            flagged.append(
                {
                    "namespace": metadata["namespace"],
                    "policy": metadata["name"],
                    "rule": int(index),
                    "flags": flags,
                }
            )
    return {"trust_domain": trust_domain, "objects": dict(sorted(kinds.items())),
            "flagged_rules": flagged}  # fmt: skip


def _istio_markdown(section: dict[str, Any]) -> list[str]:
    """The *Istio* section: the flagged AuthorizationPolicy rules."""
    objects = ", ".join(f"{n} {k}" for k, n in section["objects"].items()) or "nothing"
    out = ["## Istio", "", f"Written: {objects} (trust domain `{section['trust_domain']}`).", ""]
    check = section.get("self_check")
    if check:
        out += [
            f"Self-check with Istio's semantics (after the NetworkPolicies): "
            f"{check['coverage']:.2%} of the observed connections allowed, "
            f"{check['false_denies']} false denies, {check['denied_in_input_but_allowed']} "
            "denied flows allowed.",
            "",
        ]
    if section["flagged_rules"]:
        out += ["Rules to review (annotation `recommender.io/review`):", ""]
        out += _table(
            ["namespace", "policy", "rule", "why"],
            [[r["namespace"], r["policy"], r["rule"], _md_escape(r["flags"])]
             for r in section["flagged_rules"]],
        )  # fmt: skip
        out.append("")
    return out


def _mesh_markdown(m: dict[str, Any]) -> list[str]:
    """The *Mutual TLS* section (``report["mesh"]``): what STRICT would refuse."""
    out = [
        "## Mutual TLS (STRICT)",
        "",
        f"A STRICT PeerAuthentication is written for {len(m['namespaces'])} namespace(s). "
        f"Workloads with no sign of a mesh proxy in the flows: "
        f"{', '.join(m['workloads_without_proxy']) or 'none'}.",
        "",
    ]
    if not m["plain_text"]:
        out += ["No observed connection would be refused as plain text.", ""]
        return out
    out += [
        f"{m['plain_text_total']} observed connection(s) arrive in plain text and would be "
        "refused under STRICT: put the source in the mesh (or behind a gateway), or keep those "
        "namespaces PERMISSIVE.",
        "",
    ]
    out += _table(
        ["source", "destination", "port", "connections", "why"],
        [
            [_md_escape(c["source"]), _md_escape(c["destination"]),
             f"{c['protocol']}/{c['port']}", c["connections"], c["why"]]
            for c in m["plain_text"]
        ],
    )
    out.append("")
    return out


def _guardrails_markdown(g: dict[str, Any]) -> list[str]:
    """The *Guardrails* section (``report["guardrails"]``): conflicts and compliance."""
    out = [
        "",
        "## Guardrails",
        "",
        f"Guardrails **{_md_escape(g['name'])}** ({len(g['guardrails'])} rules, rendered as "
        f"{g['format']} in `_guardrails/`). Observed flows an admin guardrail denies get no "
        "allow rule.",
        "",
        "### Conflicts to resolve",
        "",
    ]
    if not g["conflicts"]:
        out.append("No observed flow is denied by a guardrail.")
    else:
        out.append(
            f"{g['conflicts_total']} observed edges ({g['conflict_connections']:,} connections) "
            "are denied by a guardrail: change the guardrail or the application."
        )
        out.append("")
        out += _table(
            ["source", "destination", "port", "connections", "guardrail", "why"],
            [
                [c["source"], c["destination"], f"{c['protocol']}/{c['port']}", c["connections"],
                 c["guardrail"], c["reason"]]
                for c in g["conflicts"]
            ],
        )
    out += ["", "### Compliance", "",
            "Checks of the whole stack (guardrails and these policies), as evidence for the "
            "controls named; they are not an assessment.", ""]
    out += _table(
        ["check", "status", "PCI DSS v4", "NIST 800-53", "evidence"],
        [
            [c["title"], c["status"].upper(), ", ".join(c["controls"]["pci_dss_v4"]),
             ", ".join(c["controls"]["nist_800_53"]), "; ".join(c["evidence"][:5])]
            for c in g["compliance"]
        ],
    )
    return out


def _segments_markdown(seg: dict[str, Any]) -> list[str]:
    """The *Proposed segments* section (``report["segments"]``,
    :mod:`recommender.analysis.segments`)."""
    out = [
        "## Proposed segments",
        "",
        f"Community detection ({seg['method']}, seed {seg['seed']}) on the graph of allowed "
        f"traffic between workloads: modularity **{seg['modularity']:.2f}** (above about 0.3 "
        f"the workloads form clear groups). Suggested label: `{seg['label_key']}=<segment>`. "
        "Advice only: no policy is emitted from it.",
        "",
    ]
    out += _table(
        ["segment", "members", "namespaces", "why"],
        [
            [
                s["name"],
                ", ".join(m.split(":", 1)[-1] for m in s["members"]),
                ", ".join(s["namespaces"]),
                s["reason"],
            ]
            for s in seg["segments"]
        ],
    )
    if seg["cross_segment"]:
        out += ["", "Flows a boundary around each segment would have to allow:", ""]
        out += _table(
            ["from", "to", "port", "connections", "edges"],
            [
                [
                    f["source_segment"],
                    f["destination_segment"],
                    f"{f['protocol']}/{'*' if f['port'] is None else f['port']}",
                    f["connections"],
                    len(f["edges"]),
                ]
                for f in seg["cross_segment"]
            ],
        )
    out.append("")
    return out


def report_markdown(report: dict[str, Any], graph_file: str | None = None) -> str:
    """``report.md``: the same report for people.

    ``graph_file`` is the communication graph's picture beside it (``graph.svg``), linked
    from the report when given.
    """
    s = report["summary"]
    out = ["# Network policy recommendation", ""]
    problems = (report.get("self_check") or {}).get("problems") or []
    if problems:  # first, so that nobody applies these policies without reading it
        out += [f"**Self-check failed: {_md_escape(p['message'])}.**" for p in problems]
        out += ["", "See *Self-check* below; `recommend` exited with status 3.", ""]
    staged = report.get("staged_verdicts")
    if staged and staged.get("would_break"):  # the reason a rollout waits comes first
        out += ["**Staged policies would break wanted traffic:**", ""]
        out += [f"- {w['line']}" for w in staged["would_break"]] + [""]
    out += [
        f"Flows from {s['first_seen']} to {s['last_seen']}: {s['connection_rows']:,} connection "
        f"rows, {s['edges']:,} edges between {s['workloads']} workloads.",
        "",
        f"**{s['policies']} policies** with **{s['rules']} rules** for "
        f"{len(s['namespaces_in_scope'])} namespaces "
        f"({', '.join(s['namespaces_in_scope']) or 'none'}); "
        f"{s['flagged_rules']} rules flagged for review; {s['denied_edges']} denied edges never "
        "allowed.",
        "",
    ]
    if s["namespaces_out_of_scope"]:
        out += [
            f"Namespaces without policies (out of scope): "
            f"{', '.join(s['namespaces_out_of_scope'])}.",
            "",
        ]
    check = report.get("self_check")
    if check:
        over = check["over_permissive"]
        out += [
            "## Self-check",
            "",
            f"Replayed against these policies with Kubernetes NetworkPolicy semantics, the "
            f"observed traffic is **{check['coverage']:.1%} covered** with "
            f"{check['false_denies']} false denies; {check['denied_in_input_but_allowed']} flows "
            f"denied in the input would be allowed; {check['not_evaluated_edges']} edges could "
            "not be evaluated (see `recommend evaluate`).",
        ]
        purposeful = check.get("excluded_on_purpose") or {}
        if purposeful.get("edges"):
            reasons = ", ".join(
                f"{reason} {v['edges']} ({v['denied_edges']} denied)"
                for reason, v in purposeful["by_reason"].items()
            )
            out.append(
                f"Left out on purpose and replayed as their own kind: {purposeful['edges']} "
                f"edges ({purposeful['connections']:,} connections), {purposeful['denied_edges']}"
                f" of them denied by these policies: {reasons}."
            )
        if over.get("skipped"):
            out.append(f"Over-permissiveness not computed: {over['skipped']}.")
        else:
            out.append(
                f"Over-permissiveness: {over['allowed_unobserved']} of {over['candidates']} "
                "workload x port pairs never observed are allowed (peers in namespaces without "
                "policies count here)."
            )
        out.append("")
    holdout = report.get("holdout")
    if holdout:
        out += _holdout_markdown(holdout)
    anomalies = report.get("anomalies")
    if anomalies and anomalies["flagged"]:
        out += _anomalies_markdown(anomalies)
    never = report.get("never_established")
    if never and never["edges"]:
        out += [
            "## Attempted, never established",
            "",
            f"{never['edges']} edges ({never['connections']:,} connections) were tried but "
            "never established (resets, unanswered retried SYNs, no answer counted): they get "
            "no rule (`--allow-unestablished` gives them one).",
            "",
        ]
        out += _table(
            ["source", "destination", "port", "attempts", "first seen", "last seen"],
            [
                [
                    x["source"],
                    x["destination"],
                    f"{x['protocol']}/{x['port']}" if x["port"] is not None else x["protocol"],
                    x["connections"],
                    x["first_seen"],
                    x["last_seen"],
                ]
                for x in never["items"][:50]
            ],
        )
        if never["edges"] > 50:
            out.append(f"\n({never['edges'] - 50} more in report.json, up to 200 listed there.)")
        out.append("")
    if report.get("guardrails"):
        out += _guardrails_markdown(report["guardrails"])
    if report.get("istio"):
        out += _istio_markdown(report["istio"])
    if report.get("mesh"):
        out += _mesh_markdown(report["mesh"])
    ingest = report.get("ingest")
    if ingest:
        out += ["## Input", ""]
        out += _table(
            ["read", "used", "merged duplicates", "replies dropped", "skipped"],
            [
                [
                    ingest["read"],
                    ingest["used"],
                    ingest["duplicate"],
                    ingest["reply"],
                    ingest["skipped_total"],
                ]
            ],
        )
        for reason, count in ingest["skipped"].items():
            out.append(f"- skipped {reason}: {count}")
        out.append("")
    if graph_file:
        out += [
            "## Communication graph",
            "",
            f"![Communication graph: workloads by namespace, outside peers by address class]"
            f"({graph_file})",
            "",
            "`recommend graph FLOWS -o graph.html` writes the whole graph as an interactive page "
            "(or GraphML, JSON, DOT); see docs/graph.md.",
            "",
        ]
    if report.get("segments"):
        out += _segments_markdown(report["segments"])
    out += ["## Namespaces", ""]
    out += _table(
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
    )
    out += ["", "## Rules", ""]
    out += _table(
        ["namespace", "policy", "dir", "peers", "ports", "connections", "last seen", "flags"],
        [
            [
                r["namespace"],
                r["policy"],
                r["direction"],
                ", ".join(r["peers"]),
                ", ".join(r["ports"]),
                r["connections"],
                r["last_seen"],
                ", ".join(r["flags"]),
            ]
            for r in report["rules"]
        ],
    )
    if report["selector_fallbacks"]:
        out += ["", "## Selectors to check", ""]
        out += [
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
        )
    if report["node_local"]:
        out += ["", "## Node-local traffic (no rule needed)", ""]
        out += _table(
            ["workload", "from", "port", "connections", "why"],
            [
                [x["workload"], x["from"], x["port"], x["connections"], x["why"]]
                for x in report["node_local"]
            ],
        )
    if report["not_expressible"]:
        out += ["", "## Not expressible in Kubernetes NetworkPolicy", ""]
        out += _table(
            ["source", "destination", "protocol", "connections", "why"],
            [
                [x["source"], x["destination"], x["protocol"], x["connections"], x["why"]]
                for x in report["not_expressible"]
            ],
        )
    if report["external_by_class"]:
        out += ["", "## External addresses by class", ""]
        counts: Counter[str] = Counter()
        for cls, items in report["external_by_class"].items():
            counts[cls] = len({i["address"] for i in items})
        out += _table(["class", "addresses"], [[k, v] for k, v in sorted(counts.items())])
    if report["denied"]:
        out += ["", "## Denied flows (never allowed)", ""]
        out += _table(
            ["source", "destination", "port", "connections"],
            [
                [
                    f"{d['src_namespace'] or d['src_kind']}/{d['src_id']}",
                    f"{d['dst_namespace'] or d['dst_kind']}/{d['dst_id']}",
                    f"{d['protocol']}/{d['dst_port']}",
                    d["connections"],
                ]
                for d in report["denied"]
            ],
        )
    if report["excluded"]:
        out += ["", "## Left out on purpose", ""]
        out += _table(
            ["source", "destination", "port", "connections", "reason"],
            [
                [
                    f"{d['src_namespace'] or d['src_kind']}/{d['src_id']}",
                    f"{d['dst_namespace'] or d['dst_kind']}/{d['dst_id']}",
                    f"{d['protocol']}/{d['dst_port']}",
                    d["connections"],
                    d["reason"],
                ]
                for d in report["excluded"]
            ],
        )
    out += ["", *_clusters_markdown(report)]
    return "\n".join(out).rstrip("\n") + "\n"
