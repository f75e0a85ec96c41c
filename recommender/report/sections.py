"""The report's sections: which ones a report has, in which order, under which title.

``report.json`` (its ``sections`` key), ``report.md`` (its ``##`` headings) and ``report.html``
(its ``<section>`` elements) all take their section list from :func:`report_sections`, so the
three forms have the same sections in the same order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .text import plural

__all__ = [
    "FOLD_ROWS",
    "Section",
    "group_anomalies",
    "group_flows",
    "report_sections",
    "rule_counts",
]

#: The anomaly rules in report order (recommender.analysis.anomaly.ANOMALY_RULES).
_RULE_ORDER: Final = ("scan", "sibling-deviation", "cluster-outlier")

#: Rows a table shows before the rest is folded (report.md: left out with a total; report.html:
#: in a <details> element).
FOLD_ROWS: Final = 12

Section = tuple[str, str]  # (id, title)


def report_sections(report: Mapping[str, Any]) -> list[Section]:
    """The ``(id, title)`` of every section ``report`` has, in report order.

    The ids are the anchors of ``report.html`` and the targets the verdict's reasons name.
    """
    out: list[Section] = [("verdict", "Verdict")]
    if (report.get("staged_verdicts") or {}).get("would_break"):  # why a rollout waits
        out.append(("staged", "Staged policies would break wanted traffic"))
    out.append(("summary", "Summary"))
    if report.get("decisions"):
        out.append(("decisions", "Decisions"))
    if report.get("self_check"):
        out.append(("self-check", "Self-check"))
    if report.get("holdout"):
        out.append(("holdout", "Held-out validation"))
    anomalies = report.get("anomalies") or {}
    if anomalies.get("flagged"):
        out.append(("anomalies", "Anomalies (possible scanning or lateral movement)"))
    if (report.get("never_established") or {}).get("edges"):
        out.append(("never-established", "Attempted, never established"))
    if report.get("guardrails"):
        out.append(("guardrails", "Guardrails"))
    if report.get("istio"):
        out.append(("istio", "Istio"))
    if report.get("mesh"):
        out.append(("mesh", "Mutual TLS (STRICT)"))
    if report.get("ingest"):
        out.append(("input", "Input"))
    out.append(("graph", "Communication graph"))
    if report.get("segments"):
        out.append(("segments", "Proposed segments"))
    out += [
        ("namespaces", "Namespaces"),
        ("rules", "Rules and their evidence"),
        ("flagged", "Flagged for review"),
    ]
    if report.get("external_by_class"):
        out.append(("external", "External addresses by class"))
    out += [("denied", "Denied flows (never allowed)"), ("excluded", "Left out on purpose")]
    granularity = report.get("granularity") or {}
    if granularity.get("levels"):
        out.append(("granularity", "Granularity"))
    if report.get("compaction"):
        out.append(("compaction", "Shared policies (compaction)"))
    if report.get("config"):
        out.append(("config", "Options used"))
    return out


def rule_counts(by_rule: Mapping[str, Any]) -> str:
    """``scan 132, sibling-deviation 0, cluster-outlier 0``: in rule order, whatever the
    order of the mapping (report.json sorts its keys)."""
    order = {r: i for i, r in enumerate(_RULE_ORDER)}
    items = sorted(by_rule.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return ", ".join(f"{rule} {n}" for rule, n in items)


def group_reason(a: Mapping[str, Any], group: Mapping[str, Any]) -> str:
    """Why a group of anomalies was flagged: a scanning source's one-line finding when the
    screening gave one (``anomalies.scans``), else the first edge's reason."""
    if group.get("rule") == "scan":
        for scan in a.get("scans") or []:
            if str(scan.get("summary", "")).startswith(f"{group['source']} "):
                return str(scan["summary"])
    return str(group.get("reason") or "")


def anomalies_sentence(a: Mapping[str, Any]) -> str:
    """The first sentence of the *Anomalies* section, the same in every form."""
    counts = rule_counts(a.get("by_rule") or {})
    head = f"{plural(int(a.get('flagged') or 0), 'edge')} flagged ({counts})"
    allowed = int(a.get("allowed_edges") or 0)
    if not allowed:
        return f"{head}, all denied in the input: denied flows never get a rule."
    if a.get("trust_all_flows"):
        fate = "kept in the allow rules (trust_all_flows)"
    else:
        excluded = int(a.get("excluded_edges") or 0)
        fate = (
            f"{excluded:,} left out of the allow rules "
            f"({plural(int(a.get('excluded_connections') or 0), 'connection')}); the others "
            "were trusted by a decision"
            if excluded < allowed
            else f"left out of the allow rules "
            f"({plural(int(a.get('excluded_connections') or 0), 'connection')})"
        )
    return (
        f"{head}; of the {plural(allowed, 'edge')} allowed in the input, {fate}. Denied ones "
        "never get a rule."
    )


def split_scans(
    report: Mapping[str, Any], groups: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Grouped denied flows split into those of sources anomaly screening found scanning
    (already one row each under *Anomalies*) and the rest, which a reviewer reads first."""
    anomalies = report.get("anomalies") or {}
    found = anomalies.get("groups") or group_anomalies(anomalies.get("items") or [])
    scanners = {g["source"] for g in found if g["rule"] == "scan"}
    scans = [
        g for g in groups if g["source"] in scanners or g["source"].replace("/", ":", 1) in scanners
    ]
    return scans, [g for g in groups if g not in scans]


def denied_sentence(report: Mapping[str, Any], scans: list[dict[str, Any]]) -> str:
    """The first sentence of *Denied flows*, the same in every form."""
    s = report.get("summary") or {}
    out = (
        f"{plural(int(s.get('denied_edges') or 0), 'denied edge')} "
        f"({plural(int(s.get('denied_connections') or 0), 'connection')}); none gets an allow "
        "rule."
    )
    if scans:
        sources = sorted({g["source"] for g in scans})
        out += (
            f" {plural(sum(int(g['edges']) for g in scans), 'edge')} to "
            f"{plural(len(scans), 'destination')} come from {', '.join(sources)}, which "
            "scanned (see Anomalies); the rest, by source and destination:"
        )
    return out


def partial_sentence(report: Mapping[str, Any]) -> str:
    """Which workloads were seen in less than half of the window ("" for none)."""
    from .text import when

    partial = report.get("partial_workloads") or []
    if not partial:
        return ""
    listed = "; ".join(
        f"{p['workload']} ({when(p['first_seen'])} to {when(p['last_seen'])})" for p in partial[:8]
    )
    more = f"; and {len(partial) - 8:,} more" if len(partial) > 8 else ""
    return (
        f"Seen in less than half of the window, so their rules may be incomplete: {listed}{more}."
    )


def _endpoint(row: Mapping[str, Any], side: str) -> str:
    ns = row.get(f"{side}_namespace")
    return f"{ns or row.get(f'{side}_kind')}/{row.get(f'{side}_id')}"


def _port(row: Mapping[str, Any]) -> str:
    port = row.get("dst_port")
    return f"{row.get('protocol')}/{'*' if port is None else port}"


def _sorted_ports(ports: Iterable[str]) -> list[str]:
    def key(p: str) -> tuple[str, int, str]:
        proto, _, num = p.partition("/")
        return (proto, int(num) if num.isdigit() else -1, num)

    return sorted(set(ports), key=key)


def group_flows(
    rows: Iterable[Mapping[str, Any]], with_reason: bool = False
) -> list[dict[str, Any]]:
    """Edge rows (``denied``, ``excluded``) grouped by source and destination (and reason):
    ``source``, ``destination``, ``ports`` (sorted), ``edges``, ``connections``,
    ``first_seen``, ``last_seen`` (and ``reason``); most connections first."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        key: tuple[str, ...] = (_endpoint(row, "src"), _endpoint(row, "dst"))
        if with_reason:
            key = (*key, str(row.get("reason")))
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "source": key[0],
                "destination": key[1],
                **({"reason": key[2]} if with_reason else {}),
                "ports": [],
                "edges": 0,
                "connections": 0,
                "first_seen": None,
                "last_seen": None,
            }
        g["ports"].append(_port(row))
        g["edges"] += 1
        g["connections"] += int(row.get("connections") or 0)
        first, last = row.get("first_seen"), row.get("last_seen")
        if first is not None and (g["first_seen"] is None or str(first) < str(g["first_seen"])):
            g["first_seen"] = first
        if last is not None and (g["last_seen"] is None or str(last) > str(g["last_seen"])):
            g["last_seen"] = last
    out = list(groups.values())
    for g in out:
        g["ports"] = _sorted_ports(g["ports"])
    out.sort(key=lambda g: (-g["connections"], g["source"], g["destination"], g.get("reason", "")))
    return out


def group_anomalies(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Anomalies grouped per rule and source: one row per scanning source with its counts:
    ``rule``, ``source``, ``targets`` (distinct destinations), ``edges``, ``denied``,
    ``allowed``, ``excluded``, ``connections``, ``ports`` (sorted), ``destinations`` (a few),
    ``reason`` (the first one)."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    dests: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for x in items:
        key = (str(x.get("rule")), str(x.get("source")))
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "rule": key[0],
                "source": key[1],
                "edges": 0,
                "denied": 0,
                "allowed": 0,
                "excluded": 0,
                "connections": 0,
                "ports": [],
                "reason": x.get("reason"),
            }
        g["edges"] += 1
        g["denied" if x.get("verdict") == "denied" else "allowed"] += 1
        g["excluded"] += 1 if x.get("excluded") else 0
        g["connections"] += int(x.get("connections") or 0)
        port = x.get("port")
        g["ports"].append(f"{x.get('protocol')}/{'*' if port is None else port}")
        dests[key][str(x.get("destination"))] += 1
    out = []
    for key, g in groups.items():
        g["ports"] = _sorted_ports(g["ports"])
        g["targets"] = len(dests[key])
        g["destinations"] = sorted(dests[key])
        out.append(g)
    out.sort(key=lambda g: (g["rule"], -g["edges"], g["source"]))
    return out
