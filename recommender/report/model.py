"""The recommendation report: a JSON-ready dict (``report.json``) and its Markdown rendering.

The report explains every decision: the ingest ledger, what became a rule and on what
evidence, what was flagged, what needed no rule and why, what could not be expressed, which
flows were denied, and where external traffic goes by address class. It holds no wall-clock
time, so the same input gives the same bytes. The schema is documented in ``docs/report.md``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Final

import pyarrow as pa

from ..aggregate.edges import EDGE_KEY, EdgeTables
from ..config import RecommendConfig
from ..policy.model import PolicySet
from ..synthesis.synthesizer import Findings
from .accepted import apply_accepts
from .markdown import report_markdown
from .sections import group_flows, report_sections
from .verdict import build_verdict

__all__ = [
    "REPORT_VERSION",
    "build_report",
    "finish_report",
    "istio_section",
    "report_json",
    "report_markdown",
]

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


#: Values :func:`_record` passes through as they are (asdict would not copy them either).
_PLAIN: Final = (str, int, float, bool, type(None))


def _record(record: Any) -> dict[str, Any]:
    """``asdict(record)`` with datetimes as ISO text, for flat records (a rule's fields are
    text, numbers, times and lists of text) without asdict's deep copy of every value; any
    other value still goes through asdict."""
    out: dict[str, Any] = {}
    cls: Any = type(record)
    names = _field_names(cls)
    if not names:
        return out
    values = _field_getter(cls)(record)
    for name, value in zip(names, values if len(names) > 1 else (values,), strict=True):
        kind = type(value)
        if kind in _PLAIN_TYPES or isinstance(value, _PLAIN):
            out[name] = value
        elif isinstance(value, datetime):
            out[name] = value.isoformat()
        elif kind is list and (not value or set(map(type, value)) == _JUST_TEXT):
            out[name] = list(value)
        else:
            out[name] = _iso(asdict(record)[name])
    return out


_PLAIN_TYPES: Final = frozenset(_PLAIN)
_JUST_TEXT: Final = {str}


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@cache
def _field_getter(cls: type) -> Any:
    """The values of ``cls``'s fields in one call (a tuple; the value itself for one field)."""
    from operator import attrgetter

    return attrgetter(*_field_names(cls))


def _partial_workloads(tables: EdgeTables, in_scope: list[str]) -> list[dict[str, Any]]:
    """Workloads in scope whose observed traffic spans less than half the window (new,
    scaled down or rolled out during it): their rules may be incomplete."""
    first, last = tables.first_seen, tables.last_seen
    if first is None or last is None or tables.edges.num_rows == 0:
        return []
    window = (last - first).total_seconds()
    if window < 3600:
        return []
    import pyarrow.compute as pc

    edges = tables.edges
    # Times as microseconds while grouping (a datetime object per group end costs more than
    # the rest): UTC microsecond columns, the aggregation's own; any other kind as datetimes.
    micros = all(edges.schema.field(c).type == _UTC_MICROS for c in ("first_seen", "last_seen"))
    spans: dict[tuple[str, str], list[Any]] = {}
    scope = pa.array(sorted(set(in_scope)), pa.string())
    for side in ("src", "dst"):  # earliest first and latest last time per workload end
        ns = edges.column(f"{side}_namespace")
        mask = pc.and_(
            pc.equal(edges.column(f"{side}_kind"), "workload"), pc.is_in(ns, value_set=scope)
        )
        starts, ends_at = edges.column("first_seen"), edges.column("last_seen")
        if micros:
            starts, ends_at = starts.cast(pa.int64()), ends_at.cast(pa.int64())
        ends = pa.table(
            {"ns": ns, "id": edges.column(f"{side}_id"), "first": starts, "last": ends_at}
        ).filter(pc.fill_null(mask, False))
        grouped = ends.group_by(["ns", "id"]).aggregate([("first", "min"), ("last", "max")])
        for key_ns, key_id, a, b in zip(
            grouped.column("ns").to_pylist(),
            grouped.column("id").to_pylist(),
            grouped.column("first_min").to_pylist(),
            grouped.column("last_max").to_pylist(),
            strict=True,
        ):
            seen = spans.setdefault((key_ns, key_id), [a, b])
            if a is not None and (seen[0] is None or a < seen[0]):
                seen[0] = a
            if b is not None and (seen[1] is None or b > seen[1]):
                seen[1] = b
    out = []
    for (ns, wl), (a, b) in sorted(spans.items()):
        if a is None or b is None:
            continue
        if micros:  # timedelta.total_seconds() is the same division of microseconds
            share = (b - a) / 1_000_000 / window
            if share < 0.5:
                a, b = _utc(a), _utc(b)
        else:
            share = (b - a).total_seconds() / window
        if share < 0.5:
            out.append({"workload": f"{ns}/{wl}", "first_seen": _iso(a), "last_seen": _iso(b),
                        "share": round(share, 4)})
    return out


_UTC_MICROS: Final = pa.timestamp("us", tz="UTC")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(micros: int) -> datetime:
    """The UTC time ``micros`` microseconds after the epoch (as Arrow converts it)."""
    return _EPOCH + timedelta(microseconds=micros)


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
        "rules": [_record(r) for r in rules],
        "flagged": flagged,
        "selector_fallbacks": [s for s in selectors if s["source"] != "labels" or s["ambiguous"]],
        "node_local": findings.node_local,
        "not_expressible": findings.not_expressible,
        "invalid_labels": findings.invalid_labels,
        "invalid_namespaces": findings.invalid_namespaces,
        "external_by_class": {k: external[k] for k in sorted(external)},
        "denied": _rows(tables.denied),
        "excluded": _rows(tables.excluded),
        "denied_groups": group_flows(_rows(tables.denied, limit=tables.denied.num_rows)),
        "excluded_groups": group_flows(
            _rows(tables.excluded, limit=tables.excluded.num_rows), with_reason=True
        ),
        "partial_workloads": _partial_workloads(tables, findings.namespaces_in_scope),
        "never_established": never_established(tables),
    }
    return report


def finish_report(report: dict[str, Any]) -> dict[str, Any]:
    """Add what the finished report model holds last: ``verdict`` (ready, review first or not
    ready, with reasons; :func:`~recommender.report.verdict.build_verdict`) and ``sections``
    (the id and title of every section, in the order all three forms render them). Call it
    after every stage has added its part; returns ``report``."""
    apply_accepts(report)  # flagged rules a reviewer accepted, before the verdict weighs them
    report["verdict"] = build_verdict(report)
    report["sections"] = [{"id": a, "title": t} for a, t in report_sections(report)]
    return report


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


def report_json(report: dict[str, Any]) -> str:
    """``report.json``: sorted keys, two-space indent, a final newline.

    The bytes of ``json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False,
    default=str)``. The standard library's C encoder runs only without an indent, so the
    report is encoded compactly by it (the same escapes, number and key texts, key order and
    ``default``) and indented by ``msgspec.json.format``, which copies every string and
    number as it is and puts each item on its own line with ``": "`` after keys, as ``json``
    does. What msgspec cannot take (NaN or infinite floats, lone surrogates) is written by
    ``json.dumps`` itself (:func:`_indented_json`).
    """
    return _fast_indented_json(report) + "\n"


def _fast_indented_json(value: Any) -> str:
    """:func:`_indented_json`'s bytes by the C encoders (see :func:`report_json`)."""
    import json

    import msgspec

    compact = json.dumps(
        value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":")
    )
    try:
        indented: str = msgspec.json.format(compact, indent=2)
    except (msgspec.DecodeError, UnicodeEncodeError):  # NaN, Infinity, lone surrogates
        return _indented_json(value)
    return indented


def _indented_json(value: Any) -> str:
    """The standard library's own indented writer (pure Python, slower): for what msgspec
    cannot take."""
    import json

    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
