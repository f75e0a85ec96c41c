"""Applying a decisions file (:mod:`recommender.synthesis.decisions`) to one run's edges.

The decisions act on the aggregated edges before synthesis, so every dialect renders the same
result from the same :class:`~recommender.policy.model.PolicySet`:

``exclude``
    A workload's edges (both directions) move to ``excluded`` (reason ``decision:exclude``):
    it gets no policy and no peer learns a rule for it; the namespace's default deny still
    selects it. A namespace is left out of scope like ``--exclude-namespace``: no policy, but
    its workloads remain peers of other namespaces' rules.
``reject``
    Matching evidence edges move to ``excluded`` (reason ``decision:reject``), so no rule
    allows them; the self-check then replays them against the policies and counts any that
    a broader rule still allows.
``trust``
    Anomaly screening keeps the matching edges it would have excluded
    (:func:`~recommender.analysis.anomaly.screen_flows`'s ``trusted``).
``allow``
    An edge with no observed connection is added to the evidence synthesis reads (never to the
    observed tables the report and the self-check count), its rule flagged ``decision:allow``.

Expired entries are ignored; every entry gets a status: ``applied`` (it matched something),
``stale`` (it matched nothing) or ``expired``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Final

import numpy as np
import pyarrow as pa

from ..aggregate.edges import EDGE_KEY, EdgeTables
from .decisions import ALLOW_FLAG, Decision, Decisions, Endpoint, decisions_today
from .synthesizer import dns_companion

__all__ = [
    "ALLOW_FLAG",
    "EXCLUDE_REASON",
    "REJECT_REASON",
    "DecisionRun",
    "EdgeKey",
    "edge_key",
    "matches",
]

#: The ``excluded`` reasons decisions give.
REJECT_REASON: Final = "decision:reject"
EXCLUDE_REASON: Final = "decision:exclude"

EdgeKey = tuple[Any, ...]


def edge_key(row: Mapping[str, Any]) -> EdgeKey:
    """An edge's identity (:data:`~recommender.aggregate.edges.EDGE_KEY`) from a row dict."""
    return tuple(row[k] for k in EDGE_KEY)


def _end_matches(end: Endpoint, row: Mapping[str, Any], side: str) -> bool:
    kind = row[f"{side}_kind"]
    if end.kind == "any":
        return True
    if end.kind == "workload":
        return bool(
            kind == "workload"
            and row[f"{side}_namespace"] == end.namespace
            and (end.workload == "*" or row[f"{side}_id"] == end.workload)
        )
    if end.kind == "world":
        return bool(kind == "external")
    if kind == "workload":
        return False
    net = _network(str(end.cidr))
    ips = list(row.get(f"{side}_ips") or ()) or [row[f"{side}_id"]]
    try:
        return all(ipaddress.ip_address(ip) in net for ip in ips)
    except ValueError:  # an aggregated name ("pub", a NetworkSet), not an address
        return False


@functools.lru_cache(maxsize=1024)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr)


def matches(decision: Decision, row: Mapping[str, Any]) -> bool:
    """Whether an edge row (the :data:`EDGE_KEY` columns, with ``src_ips``/``dst_ips`` when
    known) is one ``decision`` names. ``exclude`` matches an edge touching its workload."""
    if decision.action == "exclude":
        if decision.workload is None:
            return False
        ns, wl = decision.workload.split("/", 1)
        return any(
            row[f"{s}_kind"] == "workload" and row[f"{s}_namespace"] == ns and row[f"{s}_id"] == wl
            for s in ("src", "dst")
        )
    if decision.protocol is not None and row["protocol"] != decision.protocol:
        return False
    if decision.port is not None and row["dst_port"] != decision.port:
        return False
    src, dst = decision.source, decision.destination
    assert src is not None and dst is not None
    return _end_matches(src, row, "src") and _end_matches(dst, row, "dst")


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    cols = [
        *EDGE_KEY,
        *(c for c in ("src_ips", "dst_ips", "connections") if c in table.column_names),
    ]
    rows: list[dict[str, Any]] = table.select(cols).to_pylist()
    return rows


@dataclass
class DecisionRun:
    """One run's decisions and what each did (see the module docstring).

    Build it with :meth:`start`, then call, in order, :meth:`trusted` (give it to
    :func:`~recommender.analysis.anomaly.screen_flows`), :meth:`apply_to_observed`,
    :meth:`evidence_with_allows`, and after synthesis :meth:`report`.
    """

    decisions: Decisions
    today: date
    #: Per entry index: matched edges and their connections.
    edges: dict[int, int] = field(default_factory=dict)
    connections: dict[int, int] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)
    #: Evidence edges rejected (moved to ``excluded``), kept for the self-check.
    rejected: pa.Table | None = None
    #: The synthetic edges ``allow`` entries added (connections 0).
    allowed: pa.Table | None = None
    #: Namespaces ``exclude`` leaves out of scope.
    unmanaged: tuple[str, ...] = ()
    #: The workload labels synthesis saw (with fallbacks for workloads only decisions name).
    labels: pa.Table | None = None
    #: Unobserved DNS companions of observed edges that a ``reject`` entry names.
    companions: set[EdgeKey] = field(default_factory=set)

    @classmethod
    def start(cls, decisions: Decisions, today: date | None = None) -> DecisionRun:
        """The run of ``decisions`` on ``today`` (default :func:`decisions_today`)."""
        return cls(decisions, today or decisions_today())

    def active(self, action: str) -> list[tuple[int, Decision]]:
        """The entries of one action not expired today, with their indices."""
        return [(i, d) for i, d in self.decisions.active(self.today) if d.action == action]

    def _hit(self, index: int, connections: int) -> None:
        self.edges[index] = self.edges.get(index, 0) + 1
        self.connections[index] = self.connections.get(index, 0) + connections

    def trusted(self) -> Callable[[Mapping[str, Any]], bool] | None:
        """A predicate for anomaly screening: whether a flagged edge is trusted (and so kept);
        None when no ``trust`` entry is active."""
        entries = self.active("trust")
        if not entries:
            return None

        def trust(row: Mapping[str, Any]) -> bool:
            hit = False
            for i, d in entries:
                if matches(d, row):
                    self._hit(i, int(row.get("connections") or 0))
                    hit = True
            return hit

        return trust

    def apply_to_observed(self, tables: EdgeTables) -> EdgeTables:
        """``exclude`` (workloads) and ``reject``: matching evidence edges move to
        ``excluded``; excluded namespaces are remembered in :attr:`unmanaged`."""
        excluded_ns = [d for _, d in self.active("exclude") if d.namespace]
        seen_ns = {
            ns for ns in tables.workload_labels.column("namespace").to_pylist() if ns is not None
        }
        for i, d in self.active("exclude"):
            if d.namespace is not None and d.namespace in seen_ns:
                self.edges.setdefault(i, 0)
                self.connections.setdefault(i, 0)
                self.notes[i] = "namespace left out of scope: no policy, still a peer"
        self.unmanaged = tuple(sorted({str(d.namespace) for d in excluded_ns}))
        entries = self.active("exclude") + self.active("reject")
        entries = [(i, d) for i, d in entries if d.action == "reject" or d.workload]
        if not entries or tables.edges.num_rows == 0:
            return tables
        rejects = [(i, d) for i, d in entries if d.action == "reject"]
        reasons: dict[int, str] = {}
        for r, row in enumerate(_rows(tables.edges)):
            for i, d in entries:
                if matches(d, row):
                    self._hit(i, int(row["connections"] or 0))
                    reasons.setdefault(
                        r, EXCLUDE_REASON if d.action == "exclude" else REJECT_REASON
                    )
            if row["dst_port"] == 53 and row["protocol"] in ("UDP", "TCP") and rejects:
                # The DNS companion dns_both_protocols would allow with this edge.
                other = {**row, "protocol": "TCP" if row["protocol"] == "UDP" else "UDP"}
                for i, d in rejects:
                    if matches(d, other):
                        self.companions.add(edge_key(other))
                        self.edges.setdefault(i, 0)
                        self.connections.setdefault(i, 0)
        if not reasons:
            return tables
        indices = sorted(reasons)
        rejected = [r for r in indices if reasons[r] == REJECT_REASON]
        if rejected:
            self.rejected = tables.edges.take(pa.array(rejected, pa.int64()))
        mask = np.zeros(tables.edges.num_rows, dtype=bool)
        mask[indices] = True
        moved = tables.edges.take(pa.array(indices, pa.int64()))
        moved = moved.append_column("reason", pa.array([reasons[r] for r in indices], pa.string()))
        excluded = moved.select(tables.excluded.column_names).cast(tables.excluded.schema)
        if tables.excluded.num_rows:
            excluded = pa.concat_tables([tables.excluded, excluded])
        return replace(tables, edges=tables.edges.filter(pa.array(~mask)), excluded=excluded)

    def rejected_keys(self) -> frozenset[EdgeKey]:
        """The keys of the observed edges ``reject`` entries took out, and of the DNS
        companions (``dns_both_protocols``) they name."""
        observed = () if self.rejected is None else (edge_key(r) for r in _rows(self.rejected))
        return frozenset(observed) | frozenset(self.companions)

    def evidence_with_allows(
        self, evidence: EdgeTables, dns_both_protocols: bool = True
    ) -> EdgeTables:
        """What synthesis learns from: ``evidence`` plus one edge per active ``allow`` entry
        not already observed (connections 0; a workload never seen gets the fallback selector
        ``app=<name>``), plus each rejected DNS edge whose other-protocol companion
        (``dns_both_protocols``) nobody rejected or observed: synthesis, given
        :meth:`rejected_keys`, keeps only that companion, so rejecting UDP/53 leaves TCP/53
        as it was."""
        evidence = self._with_dns_companions(evidence, dns_both_protocols)
        entries = self.active("allow")
        if not entries:
            return evidence
        observed = {edge_key(r) for r in _rows(evidence.edges)}
        schema = evidence.edges.schema
        new_rows: list[dict[str, Any]] = []
        labels_seen = {
            (r["namespace"], r["workload"])
            for r in evidence.workload_labels.select(["namespace", "workload"]).to_pylist()
        }
        new_labels: list[tuple[str, str]] = []
        for i, d in entries:
            row = _synthetic_row(d, schema)
            key = edge_key(row)
            self.edges[i] = self.edges.get(i, 0) + 1
            self.connections.setdefault(i, 0)
            if key in observed:
                self.notes[i] = "already observed: the rule exists anyway"
                continue
            observed.add(key)
            new_rows.append(row)
            for side in ("src", "dst"):
                if row[f"{side}_kind"] == "workload":
                    who = (row[f"{side}_namespace"], row[f"{side}_id"])
                    if who not in labels_seen:
                        labels_seen.add(who)
                        new_labels.append(who)
                        self.notes[i] = f"{who[0]}/{who[1]} was never seen: selector app={who[1]}"
        if not new_rows:
            return evidence
        added = pa.Table.from_pylist(new_rows, schema=schema)
        self.allowed = added
        labels = evidence.workload_labels
        if new_labels:
            extra = (
                pa.table(
                    {
                        "namespace": pa.array([n for n, _ in new_labels], pa.string()),
                        "workload": pa.array([w for _, w in new_labels], pa.string()),
                        "labels": pa.array(
                            [[] for _ in new_labels], labels.schema.field("labels").type
                        ),
                    }
                )
                .select(labels.column_names)
                .cast(labels.schema)
            )
            labels = pa.concat_tables([labels, extra])
        self.labels = labels
        return replace(
            evidence, edges=pa.concat_tables([evidence.edges, added]), workload_labels=labels
        )

    def _with_dns_companions(self, evidence: EdgeTables, enabled: bool) -> EdgeTables:
        if not enabled or self.rejected is None:
            return evidence
        rejected = self.rejected_keys()
        observed = {edge_key(r) for r in _rows(evidence.edges)}
        keep = [
            i
            for i, row in enumerate(_rows(self.rejected))
            if row["dst_port"] == 53
            and row["protocol"] in ("UDP", "TCP")
            and (other := dns_companion(row, "TCP" if row["protocol"] == "UDP" else "UDP"))
            not in rejected
            and other not in observed
        ]
        if not keep:
            return evidence
        kept = self.rejected.take(pa.array(keep, pa.int64())).select(
            evidence.edges.column_names
        )
        return replace(evidence, edges=pa.concat_tables([evidence.edges, kept]))

    def allowed_keys(self) -> frozenset[EdgeKey]:
        """The edge keys ``allow`` entries added."""
        if self.allowed is None:
            return frozenset()
        return frozenset(edge_key(r) for r in _rows(self.allowed))

    def status(self, index: int) -> str:
        """``applied``, ``stale`` or ``expired`` for entry ``index`` (after the run)."""
        if self.decisions.entries[index].is_expired(self.today):
            return "expired"
        return "applied" if index in self.edges else "stale"

    def report(self, check: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``report["decisions"]``: counts per status and every entry with its status, the
        edges and connections it matched, and a note."""
        items = []
        for i, d in enumerate(self.decisions.entries):
            status = self.status(i)
            note = self.notes.get(i, "")
            if status == "stale":
                note = note or _stale_note(d)
            elif status == "expired":
                note = f"expired on {d.expires}; ignored"
            items.append(
                {
                    "index": i,
                    **d.to_dict(),
                    "status": status,
                    "edges": self.edges.get(i, 0),
                    "connections": self.connections.get(i, 0),
                    "note": note,
                }
            )
        counts = {
            s: sum(1 for x in items if x["status"] == s) for s in ("applied", "stale", "expired")
        }
        out: dict[str, Any] = {**counts, "total": len(items), "items": items}
        if check is not None:
            out["check"] = dict(check)
        return out


def _stale_note(d: Decision) -> str:
    if d.action == "exclude":
        return "no such workload or namespace in the flows"
    if d.action == "trust":
        return "anomaly screening excluded no edge it names"
    if d.action == "accept":
        return "no flagged rule allows this edge now"
    return "no observed allowed edge matches it"


def _synthetic_row(d: Decision, schema: pa.Schema) -> dict[str, Any]:
    """An edge row for an ``allow`` entry: its ends, protocol and port, no connection."""
    row: dict[str, Any] = {name: None for name in schema.names}
    for side, end in (("src", d.source), ("dst", d.destination)):
        assert end is not None
        if end.kind == "workload":
            row[f"{side}_kind"] = "workload"
            row[f"{side}_namespace"] = end.namespace
            row[f"{side}_id"] = end.workload
        else:
            cidr = end.cidr if end.kind == "cidr" else "0.0.0.0/0"
            row[f"{side}_kind"] = "external"
            row[f"{side}_id"] = cidr
            row[f"{side}_name"] = cidr
    row["protocol"] = d.protocol
    row["dst_port"] = d.port
    for name in schema.names:
        typ = schema.field(name).type
        if row[name] is None and (pa.types.is_integer(typ)) and name not in EDGE_KEY:
            row[name] = 0
        elif row[name] is None and pa.types.is_list(typ):
            row[name] = []
    return row
