"""Anomaly screening: flows that look like scanning or lateral movement get no allow rule.

A recommender must not bless an attacker's traffic just because it appeared in the learning
window. :func:`screen_flows` runs three rules over the aggregated edges (and, for the second,
the flow rows) and flags what they find, each with its reason:

``scan``
    One source reaching at least ``scan_min_targets`` distinct targets (destination endpoint,
    protocol, port), at least ``scan_denied_share`` of them only ever denied. Its denied edges
    are listed (they never become rules anyway); its *allowed* edges that are rare (fewer than
    ``rare_connections`` connections) or fall within the span of its denied attempts are
    flagged: the probes that happened to get through.
``sibling-deviation``
    A pod of a workload talks to a peer (any port) that none of its sibling pods uses, while
    at least ``sibling_min_pods - 1`` siblings were active at overlapping times. Needs pod
    names or addresses in the flows (aggregated Calico records have none: the rule is then
    silent). Egress only: load balancing spreads a service's *clients* over its replicas.
``cluster-outlier``
    In a behavioural cluster
    (:class:`~recommender.analysis.clustering.estimators.BehaviourClustering`, within a namespace,
    ``cluster_distance``) of at least ``outlier_min_cluster`` workloads, a rare egress edge (fewer
    than ``rare_connections`` connections) of one member to a peer no other member talks to.

Flagged evidence edges move from ``edges`` to ``excluded`` (reason ``anomaly:<rule>``), so
synthesis gives them no rule and the self-check does not count them, unless
``trust_all_flows`` is set: then they are only reported. Thresholds live in
:class:`~recommender.config.RecommendConfig`; see ``docs/clustering.md``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa

from ..aggregate.edges import EDGE_KEY, EVIDENCE_VERDICTS, EdgeTables, _ident
from ..config import RecommendConfig

__all__ = ["ANOMALY_RULES", "FLOW_COLUMNS", "Anomaly", "Screening", "screen_flows"]

#: The rules, in report order.
ANOMALY_RULES: Final = ("scan", "sibling-deviation", "cluster-outlier")
#: Most anomalies listed in the report (all are counted).
_MAX_LISTED: Final = 200

_Endpoint = tuple[str, str | None, str]  # kind, namespace, id


@dataclass(frozen=True)
class Anomaly:
    """One flagged edge.

    Attributes
    ----------
    rule : str
        One of :data:`ANOMALY_RULES`.
    source, destination : str
        ``namespace/workload``, or ``kind:address-or-name``.
    protocol : str
    port : int or None
    connections : int
    verdict : str
        ``allowed`` (evidence) or ``denied`` (in the input).
    excluded : bool
        Whether the edge was left out of the allow rules (never for denied edges, which get
        none anyway; never with ``trust_all_flows``).
    reason : str
        Why, in words, with the numbers.
    """

    rule: str
    source: str
    destination: str
    protocol: str
    port: int | None
    connections: int
    verdict: str
    excluded: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "connections": self.connections,
            "destination": self.destination,
            "excluded": self.excluded,
            "port": self.port,
            "protocol": self.protocol,
            "reason": self.reason,
            "rule": self.rule,
            "source": self.source,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Screening:
    """The result of :func:`screen_flows`.

    Attributes
    ----------
    anomalies : tuple of Anomaly
        Every flagged edge, by rule, then source, destination, protocol and port.
    tables : EdgeTables
        The aggregation with the excluded anomalous edges moved from ``edges`` to
        ``excluded`` (reason ``anomaly:<rule>``); unchanged with ``trust_all_flows``.
    trusted : bool
        ``trust_all_flows`` was set: anomalies were reported, not excluded.
    """

    anomalies: tuple[Anomaly, ...]
    tables: EdgeTables
    trusted: bool = False

    @property
    def excluded(self) -> tuple[Anomaly, ...]:
        """The anomalies left out of the allow rules."""
        return tuple(a for a in self.anomalies if a.excluded)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``anomalies`` section."""
        by_rule = {rule: sum(1 for a in self.anomalies if a.rule == rule) for rule in ANOMALY_RULES}
        return {
            "trust_all_flows": self.trusted,
            "flagged": len(self.anomalies),
            "allowed_edges": sum(1 for a in self.anomalies if a.verdict == "allowed"),
            "excluded_edges": len(self.excluded),
            "excluded_connections": sum(a.connections for a in self.excluded),
            "by_rule": by_rule,
            "items": [a.to_dict() for a in self.anomalies[:_MAX_LISTED]],
        }


def _describe(kind: str, namespace: str | None, ident: str) -> str:
    return f"{namespace}/{ident}" if kind == "workload" else f"{kind}:{ident}"


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    cols = [
        *EDGE_KEY,
        "connections",
        "first_seen",
        "last_seen",
        "src_ips",
    ]
    rows: list[dict[str, Any]] = table.select(cols).to_pylist()
    return rows


def _src(row: dict[str, Any]) -> _Endpoint:
    return (row["src_kind"], row["src_namespace"], row["src_id"] or "?")


def _dst(row: dict[str, Any]) -> _Endpoint:
    return (row["dst_kind"], row["dst_namespace"], row["dst_id"] or "?")


def _target(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*_dst(row), row["protocol"], row["dst_port"])


# --------------------------------------------------------------------------- scans


def _scans(
    evidence: list[dict[str, Any]], denied: list[dict[str, Any]], config: RecommendConfig
) -> tuple[dict[int, str], list[tuple[dict[str, Any], str]]]:
    """Flagged evidence rows (index -> reason) and flagged denied rows of scanning sources."""
    allowed_targets: dict[_Endpoint, set[tuple[Any, ...]]] = defaultdict(set)
    denied_targets: dict[_Endpoint, set[tuple[Any, ...]]] = defaultdict(set)
    span: dict[_Endpoint, tuple[datetime, datetime]] = {}
    for row in evidence:
        allowed_targets[_src(row)].add(_target(row))
    for row in denied:
        source = _src(row)
        denied_targets[source].add(_target(row))
        first, last = row["first_seen"], row["last_seen"] or row["first_seen"]
        if first is not None:
            old = span.get(source)
            span[source] = (min(old[0], first), max(old[1], last)) if old else (first, last)
    scanners: dict[_Endpoint, str] = {}
    for source, targets in denied_targets.items():
        only_denied = targets - allowed_targets[source]
        total = len(targets | allowed_targets[source])
        share = len(only_denied) / total
        if total >= config.scan_min_targets and share >= config.scan_denied_share:
            scanners[source] = (
                f"{_describe(*source)} reached {total} targets (peer, port), "
                f"{len(only_denied)} of them ({share:.0%}) only denied"
            )
    flagged: dict[int, str] = {}
    for i, row in enumerate(evidence):
        source = _src(row)
        if source not in scanners:
            continue
        rare = int(row["connections"] or 0) < config.rare_connections
        window = span.get(source)
        during = (
            window is not None
            and row["first_seen"] is not None
            and window[0] <= row["first_seen"]
            and (row["last_seen"] or row["first_seen"]) <= window[1]
        )
        if rare or during:
            why = "rare" if rare else "seen only during the denied attempts"
            flagged[i] = f"{scanners[source]}; this allowed edge is {why}"
    denied_flagged = [(row, scanners[_src(row)]) for row in denied if _src(row) in scanners]
    return flagged, denied_flagged


# --------------------------------------------------------------------------- siblings


def _sibling_candidates(evidence: list[dict[str, Any]], config: RecommendConfig) -> pa.Table:
    """Workloads worth the per-pod query: at least ``sibling_min_pods`` source addresses and a
    peer only one of them talks to, or no addresses to tell (the query then decides)."""
    addresses: dict[tuple[str, str], set[str]] = defaultdict(set)
    per_peer: dict[tuple[tuple[str, str], _Endpoint], set[str]] = defaultdict(set)
    unknown: set[tuple[str, str]] = set()
    for row in evidence:
        if row["src_kind"] != "workload" or row["src_namespace"] is None:
            continue
        owner = (row["src_namespace"], row["src_id"])
        ips = set(row["src_ips"] or ())
        if not ips:
            unknown.add(owner)
        addresses[owner] |= ips
        per_peer[(owner, _dst(row))] |= ips
    chosen = set(unknown)
    for (owner, _peer), ips in per_peer.items():
        if len(ips) == 1 and len(addresses[owner]) >= config.sibling_min_pods:
            chosen.add(owner)
    ordered = sorted(chosen)
    return pa.table(
        {
            "ns": pa.array([o[0] for o in ordered], pa.string()),
            "wl": pa.array([o[1] for o in ordered], pa.string()),
        }
    )


#: The flow columns the sibling rule reads when it reads flow rows again (a reader can skip
#: the others).
FLOW_COLUMNS: Final = (
    "src_kind", "src_namespace", "src_workload", "src_pod", "src_ip", "src_name",
    "dst_kind", "dst_namespace", "dst_workload", "dst_pod", "dst_ip", "dst_name",
    "start_time", "end_time", "verdict", "is_reply",
)  # fmt: skip


def _evidence_rows(
    con: duckdb.DuckDBPyConnection, flows: pa.Table, config: RecommendConfig
) -> pa.Table:
    """The candidates' evidence rows of ``flows``: workload, pod, peer and time."""
    con.register("raw", flows)
    where = ["src_kind = 'workload'", "coalesce(src_pod, src_ip) IS NOT NULL"]
    params: list[Any] = []
    if config.since is not None:
        where.append("start_time >= ?")
        params.append(config.since)
    if config.until is not None:
        where.append("start_time < ?")
        params.append(config.until)
    verdicts = ", ".join(f"'{v}'" for v in EVIDENCE_VERDICTS)
    where.append(f"verdict IN ({verdicts})")
    where.append("NOT coalesce(is_reply, false)")
    result: pa.Table = con.sql(
        f"""
        SELECT ev.* FROM (
            SELECT src_namespace AS ns, {_ident("src")} AS wl,
                   coalesce(src_pod, src_ip) AS pod, dst_kind,
                   dst_namespace, {_ident("dst")} AS dst_id, start_time,
                   coalesce(end_time, start_time) AS end_time
            FROM raw WHERE {" AND ".join(where)}
        ) ev JOIN candidates USING (ns, wl)
        """,
        params=params,
    ).to_arrow_table()
    con.unregister("raw")
    return result


def _sibling_deviations(
    flows: pa.Table | Callable[[], Iterable[pa.RecordBatch]],
    candidates: pa.Table,
    config: RecommendConfig,
) -> dict[tuple[str, str, _Endpoint], str]:
    """(namespace, workload, peer) -> reason, for peers only one concurrent pod talks to."""
    if candidates.num_rows == 0:
        return {}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("candidates", candidates)
    if isinstance(flows, pa.Table):
        mine = _evidence_rows(con, flows, config)
    else:  # read again, batch by batch, keeping only the candidates' rows
        parts = [
            _evidence_rows(con, pa.Table.from_batches([batch]), config)
            for batch in flows()
            if batch.num_rows
        ]
        if not parts:
            return {}
        mine = pa.concat_tables(parts)
    con.register("mine", mine)
    rows = con.execute(
        """
        WITH pods AS (
            SELECT ns, wl, pod, min(start_time) AS first, max(end_time) AS last
            FROM mine GROUP BY ALL
        ), crowded AS (
            SELECT ns, wl FROM pods GROUP BY ALL HAVING count(*) >= ?
        ), lonely AS (
            SELECT mine.ns, mine.wl, dst_kind, dst_namespace, dst_id, min(pod) AS pod
            FROM mine JOIN crowded USING (ns, wl)
            GROUP BY ALL HAVING count(DISTINCT pod) = 1
        )
        SELECT l.ns, l.wl, l.dst_kind, l.dst_namespace, l.dst_id, l.pod,
               count(*) FILTER (WHERE s.pod <> l.pod AND s.first <= p.last AND s.last >= p.first)
        FROM lonely l
        JOIN pods p ON p.ns = l.ns AND p.wl = l.wl AND p.pod = l.pod
        JOIN pods s ON s.ns = l.ns AND s.wl = l.wl
        GROUP BY ALL
        ORDER BY ALL
        """,
        [int(config.sibling_min_pods)],
    ).fetchall()
    out = {}
    for ns, wl, kind, dns, dst, pod, siblings in rows:
        if siblings + 1 >= config.sibling_min_pods:
            out[(ns, wl, (kind, dns, dst))] = (
                f"only pod {str(pod)[:100]} of {ns}/{wl} talks to {_describe(kind, dns, dst)}; "
                f"its {siblings} sibling pods active at the same time never do"
            )
    return out


# --------------------------------------------------------------------------- cluster outliers


def _cluster_outliers(
    tables: EdgeTables, evidence: list[dict[str, Any]], config: RecommendConfig
) -> dict[int, str]:
    """Evidence row index -> reason, for rare egress edges that break a cluster's pattern."""
    rare = [
        row
        for row in evidence
        if row["src_kind"] == "workload" and int(row["connections"] or 0) < config.rare_connections
    ]
    if not rare:
        return {}  # nothing to flag: spare the clustering
    from .clustering.core import BehaviourCore
    from .clustering.features import communication_features

    features = communication_features(tables)
    if features.matrix.shape[0] < config.outlier_min_cluster:
        return {}
    model = BehaviourCore(distance_threshold=config.cluster_distance, random_state=0)
    model.fit(features.matrix, groups=features.namespaces)
    sizes = model.cluster_sizes_
    cluster_of = {
        w: int(c) for w, c in zip(features.workloads, model.labels_, strict=True)
    }
    # Peers each cluster member talks to (egress), to find peers only one member uses.
    peers: dict[tuple[str, str], set[_Endpoint]] = defaultdict(set)
    for row in evidence:
        if row["src_kind"] == "workload":
            peers[(row["src_namespace"], row["src_id"])].add(_dst(row))
    users: dict[tuple[int, _Endpoint], int] = defaultdict(int)
    for owner, targets in peers.items():
        cluster = cluster_of.get(owner)
        if cluster is not None:
            for peer in targets:
                users[(cluster, peer)] += 1
    flagged = {}
    for i, row in enumerate(evidence):
        if row["src_kind"] != "workload" or int(row["connections"] or 0) >= config.rare_connections:
            continue
        owner = (row["src_namespace"], row["src_id"])
        cluster = cluster_of.get(owner)
        if cluster is None or sizes[cluster] < config.outlier_min_cluster:
            continue
        if users[(cluster, _dst(row))] == 1:
            flagged[i] = (
                f"{_describe('workload', *owner)} behaves like {int(sizes[cluster]) - 1} other "
                f"workloads (cluster confidence {model.cluster_confidence_[cluster]:.2f}), none of "
                f"which talks to {_describe(*_dst(row))}; {row['connections']} connection(s)"
            )
    return flagged


# --------------------------------------------------------------------------- screening


def screen_flows(
    tables: EdgeTables,
    flows: pa.Table | Callable[[], Iterable[pa.RecordBatch]] | None = None,
    config: RecommendConfig | None = None,
) -> Screening:
    """Flag edges that look like scanning or lateral movement; leave them out of the rules.

    Parameters
    ----------
    tables : EdgeTables
        The aggregation (:func:`~recommender.aggregate.edges.aggregate_edges`).
    flows : pyarrow.Table or callable, optional
        The canonical flow rows the aggregation came from, or a function returning them as
        record batches (called only when the sibling rule has suspects, to read them again);
        the sibling rule needs them (it is skipped without).
    config : RecommendConfig, optional
        Thresholds (``scan_min_targets``, ``scan_denied_share``, ``sibling_min_pods``,
        ``outlier_min_cluster``, ``cluster_distance``, ``rare_connections``) and
        ``trust_all_flows``.

    Returns
    -------
    Screening
        The anomalies and the screened tables.

    Examples
    --------
    >>> from recommender import recommend                          # doctest: +SKIP
    >>> rec = recommend("sample_flows/flows.parquet")              # doctest: +SKIP
    >>> rec.report["anomalies"]["by_rule"]                         # doctest: +SKIP
    {'scan': 144, 'sibling-deviation': 0, 'cluster-outlier': 0}
    """
    config = config or RecommendConfig()
    evidence = _rows(tables.edges)
    denied = _rows(tables.denied)
    scan_flags, scan_denied = _scans(evidence, denied, config)
    flags: dict[int, tuple[str, str]] = {i: ("scan", why) for i, why in scan_flags.items()}
    if flows is not None and (callable(flows) or flows.num_rows):
        deviations = _sibling_deviations(flows, _sibling_candidates(evidence, config), config)
        for i, row in enumerate(evidence):
            key = (row["src_namespace"], row["src_id"], _dst(row))
            if row["src_kind"] == "workload" and key in deviations and i not in flags:
                flags[i] = ("sibling-deviation", deviations[key])
    for i, why in _cluster_outliers(tables, evidence, config).items():
        flags.setdefault(i, ("cluster-outlier", why))
    exclude = not config.trust_all_flows
    anomalies = [
        _anomaly(rule, evidence[i], "allowed", exclude, why) for i, (rule, why) in flags.items()
    ]
    anomalies += [_anomaly("scan", row, "denied", False, why) for row, why in scan_denied]
    order = {rule: k for k, rule in enumerate(ANOMALY_RULES)}
    anomalies.sort(
        key=lambda a: (
            order[a.rule],
            a.source,
            a.destination,
            a.protocol,
            -1 if a.port is None else a.port,
            a.verdict,
        )
    )
    screened = tables
    if exclude and flags:
        screened = _exclude(tables, {i: f"anomaly:{rule}" for i, (rule, _) in flags.items()})
    return Screening(tuple(anomalies), screened, trusted=not exclude)


def _anomaly(rule: str, row: dict[str, Any], verdict: str, excluded: bool, why: str) -> Anomaly:
    port = row["dst_port"]
    return Anomaly(
        rule,
        _describe(*_src(row)),
        _describe(*_dst(row)),
        str(row["protocol"]),
        None if port is None else int(port),
        int(row["connections"] or 0),
        verdict,
        excluded,
        why,
    )


def _exclude(tables: EdgeTables, reasons: dict[int, str]) -> EdgeTables:
    """Move the edges at ``reasons``' indices from ``edges`` to ``excluded``."""
    mask = np.zeros(tables.edges.num_rows, dtype=bool)
    mask[list(reasons)] = True
    keep = tables.edges.filter(pa.array(~mask))
    indices = sorted(reasons)
    moved = tables.edges.take(pa.array(indices, pa.int64()))
    moved = moved.append_column("reason", pa.array([reasons[i] for i in indices], pa.string()))
    excluded = tables.excluded
    if excluded.num_rows == 0:
        excluded = moved.select(excluded.column_names).cast(excluded.schema)
    else:
        excluded = pa.concat_tables(
            [excluded, moved.select(excluded.column_names).cast(excluded.schema)]
        )
    return replace(tables, edges=keep, excluded=excluded)
