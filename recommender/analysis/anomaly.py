"""Anomaly screening: flows that look like scanning, lateral movement or exfiltration get no
allow rule.

A recommender must not bless an attacker's traffic just because it appeared in the learning
window, and flow logs are usually recorded before any policy is enforced: a scan was most
likely FORWARDED. :func:`screen_flows` runs three rules over the aggregated edges (and, for the
second, the flow rows) and flags what they find, each exclusion with the statistic behind it:

``scan``
    One source trying at least ``scan_min_targets`` distinct targets (destination endpoint,
    protocol, port) within ``scan_window`` seconds, at least ``scan_min_failed`` of them
    *refused* (denied, or attempted but never established) and at least ``scan_denied_share``
    refused or *never seen before* (an unestablished edge of fewer than ``rare_connections``
    connections to a peer port no other source uses), whatever the verdicts. Its targets in
    that span get no rule, answered or not (a port that answers the scan because others use it
    included), unless they are its ordinary traffic: the resolver (port 53), the API server,
    edges with ``rare_connections`` or more connections or seen outside the span. One finding
    per scanning source (:class:`Scan`).
``sibling-deviation``
    One pod of a workload is the only one to talk to a peer (any port) although
    ``sibling_min_pods`` or more of its pods were active at the same time (a CronJob's or Job's
    runs count as its pods, concurrent or not, and only raw-IP egress is judged across runs: a
    run may well do what no other run does). Precision first: the chance that the edge's
    ``n`` connections all came from one pod anyway is the sum over the concurrent pods of
    their share of the workload's connections to the power ``n`` (with one or two connections
    it is large); times the peer's prior (``sibling_raw_ip_prior`` for a public address with
    no DNS name on an unusual port, else 1), it must be at most ``sibling_max_chance``. The
    resolver, the API server and peers any other workload uses are never flagged. Needs pod
    names or addresses in the flows (aggregated Calico records have none: the rule is then
    silent). Egress only: load balancing spreads a service's *clients* over its replicas.
``cluster-outlier``
    In a behavioural cluster
    (:class:`~recommender.analysis.clustering.estimators.BehaviourClustering`, within a
    namespace, ``cluster_distance``) of at least ``outlier_min_cluster`` workloads, an egress
    edge of two or more (but fewer than ``rare_connections``) connections of one member to a
    raw-IP peer (as above) that no other workload uses: the chance ``1 / members`` times the
    raw-IP prior must be at most ``sibling_max_chance``.

Flagged evidence edges move from ``edges`` to ``excluded`` (reason ``anomaly:<rule>``), so
synthesis gives them no rule (the self-check still replays them, as excluded on purpose),
unless ``trust_all_flows`` is set: then they are only reported. Thresholds live in
:class:`~recommender.config.RecommendConfig`; see ``docs/concepts.md`` and
``docs/clustering.md``.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa

from ..aggregate.edges import EDGE_KEY, EVIDENCE_VERDICTS, EdgeTables, _ident, _window
from ..aggregate.pyrows import table_rows
from ..config import RecommendConfig

__all__ = ["ANOMALY_RULES", "FLOW_COLUMNS", "Anomaly", "Scan", "Screening", "screen_flows"]

#: The rules, in report order.
ANOMALY_RULES: Final = ("scan", "sibling-deviation", "cluster-outlier")
#: Most anomalies listed in the report (all are counted).
_MAX_LISTED: Final = 200
#: Ports of ordinary outside traffic: a peer reached on one of them is not raw-IP egress.
_COMMON_PORTS: Final = frozenset({53, 80, 123, 443, 853, 8080, 8443})
#: Ports of the API server (beside the ``kube-apiserver`` entity and the ``kubernetes`` Service).
_API_PORTS: Final = frozenset({6443})
#: Owner kinds whose pods are runs, one after the other: siblings across runs.
_RUN_KINDS: Final = frozenset({"Job", "CronJob"})

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
        ``allowed`` (evidence), ``denied`` (in the input) or ``failed`` (attempted, never
        established).
    excluded : bool
        Whether the edge was left out of the allow rules by this rule (never for denied or
        failed edges, which get none anyway; never with ``trust_all_flows``).
    reason : str
        Why, in words, with the statistic.
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
class Scan:
    """One scanning source: the finding the report shows for it.

    Attributes
    ----------
    source : str
        ``namespace/workload`` or ``kind:address``.
    targets, ports : int
        Distinct (peer, protocol, port) targets it tried in the span, and distinct ports.
    first, last : datetime
        The span of those attempts.
    refused, denied, never_established, unseen, answered : int
        Targets refused (denied in the input, or attempted and never established), of those
        the denied and the never established; targets never seen before (see the module
        docstring); targets that answered (allowed edges with an established or unknown
        outcome).
    excluded : int
        Allowed edges of the span left out of the rules (0 with ``trust_all_flows``).
    kept : int
        Allowed edges of the span kept as the source's ordinary traffic.
    """

    source: str
    targets: int
    ports: int
    first: datetime
    last: datetime
    refused: int
    denied: int
    never_established: int
    unseen: int
    answered: int
    excluded: int
    kept: int

    @property
    def summary(self) -> str:
        """The finding in one line."""
        fate = f"{self.excluded} excluded" if self.excluded else "none excluded"
        kept = f", {self.kept} kept as ordinary traffic" if self.kept else ""
        return (
            f"{self.source} probed {self.targets} targets on {self.ports} ports between "
            f"{self.first:%Y-%m-%d %H:%M:%S} and {self.last:%H:%M:%S}; {self.refused} refused "
            f"({self.denied} denied, {self.never_established} never established), "
            f"{self.answered} answered ({self.unseen} never seen before); answered targets: "
            f"{fate}{kept}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "answered": self.answered,
            "denied": self.denied,
            "excluded": self.excluded,
            "first": self.first.isoformat(),
            "kept": self.kept,
            "last": self.last.isoformat(),
            "never_established": self.never_established,
            "ports": self.ports,
            "refused": self.refused,
            "source": self.source,
            "summary": self.summary,
            "targets": self.targets,
            "unseen": self.unseen,
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
    scans : tuple of Scan
        One finding per scanning source, by source.
    """

    anomalies: tuple[Anomaly, ...]
    tables: EdgeTables
    trusted: bool = False
    scans: tuple[Scan, ...] = ()

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
            "scans": [s.to_dict() for s in self.scans],
            "items": [a.to_dict() for a in self.anomalies[:_MAX_LISTED]],
        }


def _describe(kind: str, namespace: str | None, ident: str) -> str:
    return f"{namespace}/{ident}" if kind == "workload" else f"{kind}:{ident}"


_ROW_COLUMNS: Final = (*EDGE_KEY, "connections", "first_seen", "last_seen", "src_ips")


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    cols = [c for c in (*_ROW_COLUMNS, "established", "dns_names", "dst_service", "reason")
            if c in table.column_names]  # fmt: skip
    return table_rows(table, cols)


def _src(row: dict[str, Any]) -> _Endpoint:
    return (row["src_kind"], row["src_namespace"], row["src_id"] or "?")


def _dst(row: dict[str, Any]) -> _Endpoint:
    return (row["dst_kind"], row["dst_namespace"], row["dst_id"] or "?")


def _target(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*_dst(row), row["protocol"], row["dst_port"])


def _is_api_server(row: dict[str, Any]) -> bool:
    return (
        row["dst_id"] == "kube-apiserver"
        or row.get("dst_port") in _API_PORTS
        or (row.get("dst_service") == "kubernetes" and row["dst_kind"] != "workload")
    )


class _Peers:
    """What the rules ask about peers, from every edge: who uses a peer, which peers are the
    resolver or the API server, which are raw-IP egress."""

    def __init__(self, evidence: list[dict[str, Any]], others: list[dict[str, Any]]) -> None:
        self.users: dict[_Endpoint, set[_Endpoint]] = defaultdict(set)
        self.port_users: dict[tuple[Any, ...], set[_Endpoint]] = defaultdict(set)
        self.protected: set[_Endpoint] = set()
        named: set[_Endpoint] = set()
        common: set[_Endpoint] = set()
        for row in (*evidence, *others):
            peer = _dst(row)
            source = _src(row)
            self.users[peer].add(source)
            port = row["dst_port"]
            self.port_users[(*peer, row["protocol"], port)].add(source)
            if port == 53 or _is_api_server(row):
                self.protected.add(peer)
            if row.get("dns_names"):
                named.add(peer)
            if port in _COMMON_PORTS:
                common.add(peer)
        self.raw_ip = {
            peer
            for peer in self.users
            if peer[0] == "external" and peer not in named and peer not in common
            and _public(peer[2])
        }  # fmt: skip

    def shared(self, peer: _Endpoint, source: _Endpoint) -> bool:
        """Another source than ``source`` uses ``peer``."""
        return _others(self.users.get(peer), source)

    def prior(self, peer: _Endpoint, config: RecommendConfig) -> float:
        return config.sibling_raw_ip_prior if peer in self.raw_ip else 1.0


def _others(users: set[_Endpoint] | None, source: _Endpoint) -> bool:
    """Whether ``users`` holds another endpoint than ``source`` (``users - {source}``)."""
    return users is not None and (len(users) > 1 or (len(users) == 1 and source not in users))


def _public(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_global
    except ValueError:
        return False


# --------------------------------------------------------------------------- scans


@dataclass
class _Try:
    """One target of a source: its edges merged."""

    first: datetime
    last: datetime
    denied: bool = False
    failed: bool = False
    answered: bool = False
    established: bool = False
    connections: int = 0
    rows: list[int] | None = None  # indices of its allowed (evidence) rows


def _scans(
    evidence: list[dict[str, Any]],
    denied: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    peers: _Peers,
    config: RecommendConfig,
) -> tuple[list[Scan], dict[int, str], list[tuple[dict[str, Any], str, str]]]:
    """The scanning sources, the flagged evidence rows (index -> reason) and the listed refused
    rows (row, verdict, reason) of each."""
    tries: dict[_Endpoint, dict[tuple[Any, ...], _Try]] = defaultdict(dict)
    # Only a source with scan_min_targets distinct targets or more can be scanning: those
    # are found first, so that no per-target state is built for the others (most sources).
    tried: dict[_Endpoint, set[tuple[Any, ...]]] = defaultdict(set)
    for rows in (evidence, denied, failed):
        for row in rows:
            if row["first_seen"] is not None:
                tried[_src(row)].add(_target(row))
    wide = {s for s, found in tried.items() if len(found) >= config.scan_min_targets}

    def add(row: dict[str, Any], kind: str, index: int | None = None) -> None:
        first = row["first_seen"]
        if first is None:
            return
        source = _src(row)
        if source not in wide:
            return
        last = row["last_seen"] or first
        mine = tries[source]
        target = _target(row)
        t = mine.get(target)
        if t is None:
            t = mine[target] = _Try(first, last, rows=[])
        t.first, t.last = min(t.first, first), max(t.last, last)
        t.connections += int(row["connections"] or 0)
        if kind == "denied":
            t.denied = True
        elif kind == "failed":
            t.failed = True
        else:
            t.answered = True
            t.established = t.established or int(row.get("established") or 0) > 0
            assert t.rows is not None and index is not None
            t.rows.append(index)

    for i, row in enumerate(evidence):
        add(row, "allowed", i)
    for row in denied:
        add(row, "denied")
    for row in failed:
        add(row, "failed")
    window = timedelta(seconds=config.scan_window)
    found: list[Scan] = []
    flagged: dict[int, str] = {}
    listed: list[tuple[dict[str, Any], str, str]] = []
    for source in sorted(tries, key=lambda s: (s[0], s[1] or "", s[2])):
        mine = tries[source]
        if len(mine) < config.scan_min_targets:
            continue

        def refused(t: _Try) -> bool:
            return (t.denied or t.failed) and not t.established

        def unseen(target: tuple[Any, ...], t: _Try, src: _Endpoint = source) -> bool:
            return (
                t.answered and not t.established and not refused(t)
                and t.connections < config.rare_connections
                and not _others(peers.port_users.get(target), src)
            )  # fmt: skip

        ordered = sorted(mine.items(), key=lambda kv: (kv[1].first, str(kv[0])))
        marks = [(refused(t), unseen(k, t)) for k, t in ordered]
        in_scan = np.zeros(len(ordered), dtype=bool)
        j = n_refused = n_probe = 0
        for i in range(len(ordered)):  # every window [first_i, first_i + scan_window]
            while j < len(ordered) and ordered[j][1].first <= ordered[i][1].first + window:
                n_refused += marks[j][0]
                n_probe += marks[j][0] or marks[j][1]
                j += 1
            count = j - i
            if (
                count >= config.scan_min_targets
                and n_refused >= config.scan_min_failed
                and n_probe >= config.scan_denied_share * count
            ):
                in_scan[i:j] = True
            n_refused -= marks[i][0]
            n_probe -= marks[i][0] or marks[i][1]
        if not in_scan.any():
            continue
        span = [ordered[k] for k in np.flatnonzero(in_scan)]
        start = min(t.first for _, t in span)
        end = max(t.first for _, t in span)
        n_denied = sum(1 for _, t in span if t.denied and not t.established)
        n_failed = sum(1 for _, t in span if refused(t) and not t.denied)
        n_unseen = sum(1 for k, t in span if unseen(k, t))
        answered = [(k, t) for k, t in span if t.answered and not refused(t)]
        excluded = kept = 0
        summary_head = (
            f"{_describe(*source)} probed {len(span)} targets between {start:%H:%M:%S} and "
            f"{end:%H:%M:%S}, {n_denied + n_failed} refused"
        )
        for (kind, ns, ident, _proto, _port), t in answered:
            peer = (kind, ns, ident)
            ordinary = (
                peer in peers.protected
                or t.connections >= config.rare_connections
                or t.first < start
                or t.last > end + window
            )
            if ordinary:
                kept += 1
                continue
            excluded += 1
            for index in t.rows or ():
                flagged[index] = f"{summary_head}; this target answered during the scan"
        found.append(
            Scan(
                _describe(*source),
                len(span),
                len({k[4] for k, _ in span}),
                start,
                end,
                n_denied + n_failed,
                n_denied,
                n_failed,
                n_unseen,
                len(answered),
                excluded,
                kept,
            )
        )
        targets = {k for k, _ in span}
        for rows, verdict in ((denied, "denied"), (failed, "failed")):
            for row in rows:
                if _src(row) == source and _target(row) in targets:
                    listed.append((row, verdict, f"{summary_head}; refused ({verdict})"))
    return found, flagged, listed


# --------------------------------------------------------------------------- siblings


def _sibling_candidates(
    evidence: list[dict[str, Any]], peers: _Peers, config: RecommendConfig
) -> pa.Table:
    """Workloads worth the per-pod query: a peer no other workload uses, not protected, that
    only one of its source addresses talks to while it has ``sibling_min_pods`` addresses or
    more (or no addresses to tell: the query then decides)."""
    addresses: dict[tuple[str, str], set[str]] = defaultdict(set)
    per_peer: dict[tuple[tuple[str, str], _Endpoint], set[str]] = defaultdict(set)
    unknown: set[tuple[str, str]] = set()
    for row in evidence:
        if row["src_kind"] != "workload" or row["src_namespace"] is None:
            continue
        owner = (row["src_namespace"], row["src_id"])
        ips = set(row["src_ips"] or ())
        addresses[owner] |= ips
        peer = _dst(row)
        if peer in peers.protected or peers.shared(peer, _src(row)):
            continue
        if not ips:
            unknown.add(owner)
        per_peer[(owner, peer)] |= ips
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
    "src_workload_kind", "dst_workload_kind", "start_time", "end_time", "verdict", "is_reply",
    "connections",
)  # fmt: skip


def _evidence_rows(
    con: duckdb.DuckDBPyConnection, flows: pa.Table, config: RecommendConfig
) -> pa.Table:
    """The candidates' evidence rows of ``flows``, per pod and peer: connections and times."""
    con.register("raw", flows)
    window, params = _window(config)
    where = ["src_kind = 'workload'", "coalesce(src_pod, src_ip) IS NOT NULL", window]
    verdicts = ", ".join(f"'{v}'" for v in EVIDENCE_VERDICTS)
    where.append(f"verdict IN ({verdicts})")
    where.append("NOT coalesce(is_reply, false)")
    result: pa.Table = con.sql(
        f"""
        SELECT ns, wl, pod, dst_kind, dst_namespace, dst_id,
               max(wk) AS wk, sum(n)::BIGINT AS n, min(start_time) AS first,
               max(end_time) AS last
        FROM (
            SELECT src_namespace AS ns, {_ident("src")} AS wl, src_workload_kind AS wk,
                   coalesce(src_pod, src_ip) AS pod, dst_kind,
                   dst_namespace, {_ident("dst")} AS dst_id, start_time,
                   coalesce(end_time, start_time) AS end_time, connections AS n
            FROM raw WHERE {" AND ".join(where)}
        ) ev JOIN candidates USING (ns, wl)
        GROUP BY ALL
        """,
        params=params,
    ).to_arrow_table()
    con.unregister("raw")
    return result


def _owned(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with its endpoints named by their owners, as the aggregation names them (a
    CronJob's runs as the CronJob: :func:`~recommender.aggregate.owners.resolve_owner`)."""
    from ..aggregate.owners import resolve_batch_owners

    names = batch.schema.names
    sides = tuple(s for s in ("src", "dst") if f"{s}_workload_kind" in names)
    return resolve_batch_owners(batch, sides=sides)


def _sibling_deviations(
    flows: pa.Table | Callable[[], Iterable[pa.RecordBatch]],
    candidates: pa.Table,
    peers: _Peers,
    config: RecommendConfig,
    pod_peers: pa.Table | None = None,
) -> dict[tuple[str, str, _Endpoint], str]:
    """(namespace, workload, peer) -> reason with the statistic, for peers only one pod talks
    to while its concurrent siblings had the chance (see the module docstring). The per-pod
    rows come from the aggregation's ``pod_peers`` when it kept them, else from ``flows``,
    read again."""
    if candidates.num_rows == 0:
        return {}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("candidates", candidates)
    if pod_peers is not None:  # gathered by the aggregation, in the same pass
        con.register("pod_peers", pod_peers)
        parts = [con.sql("SELECT * FROM pod_peers JOIN candidates USING (ns, wl)").to_arrow_table()]
    else:  # read again, batch by batch, keeping only the candidates' rows
        batches = flows.to_batches() if isinstance(flows, pa.Table) else flows()
        parts = [
            _evidence_rows(con, pa.Table.from_batches([_owned(batch)]), config)
            for batch in batches
            if batch.num_rows
        ]
        if not parts:
            return {}
    con.register("parts", pa.concat_tables(parts))
    rows = con.execute(
        """
        SELECT ns, wl, pod, dst_kind, dst_namespace, dst_id, max(wk), sum(n)::BIGINT,
               min(first), max(last)
        FROM parts GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    con.close()
    # Per workload: each pod's connections and active span; per peer: the pods using it.
    pods: dict[tuple[str, str], dict[str, list[Any]]] = defaultdict(dict)
    kinds: dict[tuple[str, str], str | None] = {}
    users: dict[tuple[str, str, _Endpoint], dict[str, list[Any]]] = defaultdict(dict)
    for ns, wl, pod, kind, dns, dst, wk, n, first, last in rows:
        owner = (ns, wl)
        kinds[owner] = kinds.get(owner) or wk
        span = pods[owner].setdefault(pod, [0, first, last])
        span[0] += int(n or 0)
        span[1], span[2] = min(span[1], first), max(span[2], last)
        users[(ns, wl, (kind, dns, dst or "?"))][pod] = [int(n or 0), first, last]
    out = {}
    for (ns, wl, peer), using in users.items():
        if len(using) != 1:
            continue
        source: _Endpoint = ("workload", ns, wl)
        if peer in peers.protected or peers.shared(peer, source):
            continue
        ((pod, (n, first, last)),) = using.items()
        runs = kinds.get((ns, wl)) in _RUN_KINDS
        prior = peers.prior(peer, config)
        if runs and prior >= 1:
            continue  # a run may do what no other run does (a monthly report): only raw-IP egress
        concurrent = {
            p: span[0]
            for p, span in pods[(ns, wl)].items()
            if runs or p == pod or (span[1] <= last and span[2] >= first)
        }
        if len(concurrent) < config.sibling_min_pods:
            continue
        total = sum(concurrent.values()) or 1
        chance = sum((c / total) ** n for c in concurrent.values())
        if chance * prior > config.sibling_max_chance:
            continue
        siblings = len(concurrent) - 1
        share = n / (sum(span[0] for span in pods[(ns, wl)].values()) or 1)
        when = "runs of the same CronJob or Job" if runs else "active at the same time"
        raw = "; a public address with no DNS name on an unusual port" if prior < 1 else ""
        out[(ns, wl, peer)] = (
            f"only pod {str(pod)[:100]} of {ns}/{wl} talks to {_describe(*peer)} ({n} "
            f"connection(s), {share:.1%} of the workload's); its {siblings} sibling pods {when} "
            "never do, and no other "
            f"workload does{raw}: chance {chance:.3g} x prior {prior:g} = "
            f"{chance * prior:.3g} <= {config.sibling_max_chance:g}"
        )
    return out


# --------------------------------------------------------------------------- cluster outliers


def _cluster_outliers(
    tables: EdgeTables, evidence: list[dict[str, Any]], peers: _Peers, config: RecommendConfig
) -> dict[int, str]:
    """Evidence row index -> reason, for raw-IP egress edges that break a cluster's pattern."""
    suspects = [
        i
        for i, row in enumerate(evidence)
        if row["src_kind"] == "workload"
        and 2 <= int(row["connections"] or 0) < config.rare_connections
        and _dst(row) in peers.raw_ip
        and not peers.shared(_dst(row), _src(row))
    ]
    if not suspects:
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
    flagged = {}
    for i in suspects:
        row = evidence[i]
        owner = (row["src_namespace"], row["src_id"])
        cluster = cluster_of.get(owner)
        if cluster is None or sizes[cluster] < config.outlier_min_cluster:
            continue
        members = int(sizes[cluster])
        prior = peers.prior(_dst(row), config)
        chance = 1 / members
        if chance * prior > config.sibling_max_chance:
            continue
        flagged[i] = (
            f"{_describe('workload', *owner)} behaves like {members - 1} other workloads "
            f"(cluster confidence {model.cluster_confidence_[cluster]:.2f}), none of which (nor "
            f"any other workload) talks to {_describe(*_dst(row))}, a public address with no "
            f"DNS name on an unusual port; {row['connections']} connection(s): chance 1/"
            f"{members} x prior {prior:g} = {chance * prior:.3g} <= {config.sibling_max_chance:g}"
        )
    return flagged


# --------------------------------------------------------------------------- screening


def screen_flows(
    tables: EdgeTables,
    flows: pa.Table | Callable[[], Iterable[pa.RecordBatch]] | None = None,
    config: RecommendConfig | None = None,
    *,
    trusted: Callable[[dict[str, Any]], bool] | None = None,
) -> Screening:
    """Flag edges that look like scanning, lateral movement or exfiltration; leave them out of
    the rules.

    Parameters
    ----------
    tables : EdgeTables
        The aggregation (:func:`~recommender.aggregate.edges.aggregate_edges`).
    flows : pyarrow.Table or callable, optional
        The canonical flow rows the aggregation came from, or a function returning them as
        record batches (called only when the sibling rule has suspects, to read them again);
        the sibling rule needs them (it is skipped without).
    config : RecommendConfig, optional
        Thresholds (``scan_min_targets``, ``scan_denied_share``, ``scan_window``,
        ``scan_min_failed``, ``sibling_min_pods``, ``sibling_max_chance``,
        ``sibling_raw_ip_prior``, ``outlier_min_cluster``, ``cluster_distance``,
        ``rare_connections``) and ``trust_all_flows``.
    trusted : callable, optional
        Whether a flagged evidence edge (a row with the
        :data:`~recommender.aggregate.edges.EDGE_KEY` columns, ``connections`` and ``src_ips``)
        is trusted by a decisions file: it is then reported, with "trusted by a decision" in
        its reason, but not excluded.

    Returns
    -------
    Screening
        The anomalies, one finding per scanning source, and the screened tables.

    Examples
    --------
    >>> from recommender import recommend                          # doctest: +SKIP
    >>> rec = recommend("sample_flows/flows.parquet")              # doctest: +SKIP
    >>> rec.report["anomalies"]["scans"][0]["summary"]             # doctest: +SKIP
    'shop/debug-shell probed 144 targets on ...'
    """
    config = config or RecommendConfig()
    evidence = _rows(tables.edges)
    denied = _rows(tables.denied)
    excluded = _rows(tables.excluded)
    failed = [row for row in excluded if row.get("reason") == "never-established"]
    peers = _Peers(evidence, [*denied, *failed])
    scans, scan_flags, scan_listed = _scans(evidence, denied, failed, peers, config)
    flags: dict[int, tuple[str, str]] = {i: ("scan", why) for i, why in scan_flags.items()}
    if flows is not None and (callable(flows) or flows.num_rows):
        candidates = _sibling_candidates(evidence, peers, config)
        deviations = _sibling_deviations(flows, candidates, peers, config, tables.pod_peers)
        for i, row in enumerate(evidence):
            key = (row["src_namespace"], row["src_id"], _dst(row))
            if row["src_kind"] == "workload" and key in deviations and i not in flags:
                flags[i] = ("sibling-deviation", deviations[key])
    for i, why in _cluster_outliers(tables, evidence, peers, config).items():
        flags.setdefault(i, ("cluster-outlier", why))
    exclude = not config.trust_all_flows
    kept = (
        {i for i in flags if trusted(evidence[i])} if exclude and trusted is not None else set()
    )
    anomalies = [
        _anomaly(
            rule,
            evidence[i],
            "allowed",
            exclude and i not in kept,
            f"{why}; trusted by a decision" if i in kept else why,
        )
        for i, (rule, why) in flags.items()
    ]
    anomalies += [_anomaly("scan", row, verdict, False, why) for row, verdict, why in scan_listed]
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
    if not exclude:
        scans = [replace(s, kept=s.kept + s.excluded, excluded=0) for s in scans]
    screened = tables
    if exclude and len(flags) > len(kept):
        screened = _exclude(
            tables, {i: f"anomaly:{rule}" for i, (rule, _) in flags.items() if i not in kept}
        )
    return Screening(tuple(anomalies), screened, trusted=not exclude, scans=tuple(scans))


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
