"""From edges to a least-privilege :class:`~recommender.policy.model.PolicySet`.

Per namespace in scope: a default deny for ingress and egress. Per workload with observed
traffic: one policy whose ingress rules name the observed sources and whose egress rules name
the observed destinations, ports merged per peer and peers merged per port set. What is not
expressible, or needs no rule, is not dropped silently but recorded in :class:`Findings`.
See ``docs/concepts.md`` for every generalisation and why.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Final

import pyarrow as pa

from ..aggregate.addresses import (
    carve_block,
    classify_address,
    is_public,
    merge_cidrs,
    public_universe,
)
from ..aggregate.edges import EDGE_KEY, EdgeTables
from ..aggregate.label_maps import label_rows
from ..aggregate.pyrows import table_rows
from ..aggregate.selectors import (
    VOLATILE_LABELS,
    VOLATILE_PREFIXES,
    SelectorChoice,
    choose_selectors,
)
from ..config import RecommendConfig
from ..policy._names import is_dns1123_label, is_label_key, is_label_value, safe_name
from ..policy.mesh import MESH_PORTS_ANNOTATION, mesh_port
from ..policy.model import Evidence, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
from .decisions import ALLOW_FLAG
from .refused import RefusedSet, free_between

__all__ = ["Findings", "RuleRecord", "synthesize"]

NAMESPACE_LABEL: Final = "kubernetes.io/metadata.name"
MANAGED_BY: Final = (("app.kubernetes.io/managed-by", "recommender"),)
_K8S_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
_PRIVATE_V4: Final = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


@dataclass
class RuleRecord:
    """One emitted rule, flattened for tables and reports."""

    namespace: str
    policy: str
    workload: str
    direction: str
    peers: list[str]
    ports: list[str]
    connections: int
    first_seen: datetime | None
    last_seen: datetime | None
    windows: int
    flags: list[str]


@dataclass
class Findings:
    """What synthesis decided besides the rules: notes for the report, never silent drops."""

    namespaces_in_scope: list[str] = field(default_factory=list)
    namespaces_out_of_scope: list[str] = field(default_factory=list)
    selectors: dict[tuple[str, str], SelectorChoice] = field(default_factory=dict)
    rules: list[RuleRecord] = field(default_factory=list)
    node_local: list[dict[str, Any]] = field(default_factory=list)
    not_expressible: list[dict[str, Any]] = field(default_factory=list)
    invalid_labels: list[dict[str, Any]] = field(default_factory=list)
    invalid_namespaces: list[str] = field(default_factory=list)
    external: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Per (namespace, workload), its own policy before any compaction.
    workload_policies: dict[tuple[str, str], Policy] = field(default_factory=dict)
    #: Policies shared by several workloads (``compact_policies``): docs/clustering.md.
    compaction: list[dict[str, Any]] = field(default_factory=list)


class _Acc:
    """Evidence accumulated for one (policy, direction, peer): one is made per peer of
    every policy, so it is a slotted class with only the sets it needs."""

    __slots__ = ("connections", "edge_ids", "first", "flags", "last", "ports", "windows")

    def __init__(self) -> None:
        self.ports: set[PortSpec] = set()
        self.connections = 0
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.windows = 0
        self.flags: set[str] = set()
        self.edge_ids: set[int] | None = None  # ("internet" evidence only)

    def add(
        self, edge: dict[str, Any], ports: Iterable[PortSpec], flags: Iterable[str] = ()
    ) -> None:
        self.ports.update(ports)
        self.connections += int(edge["connections"] or 0)
        first, last = edge["first_seen"], edge["last_seen"]
        self.first = first if self.first is None or (first and first < self.first) else self.first
        self.last = last if self.last is None or (last and last > self.last) else self.last
        self.windows = max(self.windows, int(edge["windows"] or 0))
        self.flags.update(flags)


def _absorb(target: _Acc, acc: _Acc) -> None:
    """Add ``acc``'s evidence to ``target`` (a peer that stands for several)."""
    target.ports.update(acc.ports)
    target.connections += acc.connections
    target.first = min(filter(None, (target.first, acc.first)), default=None)
    target.last = max(filter(None, (target.last, acc.last)), default=None)
    target.windows = max(target.windows, acc.windows)
    target.flags.update(acc.flags)


#: The edge columns synthesis reads (the lists of nodes, hours and HTTP requests it leaves to
#: the enrichment and the report, and converting them was most of the cost of the edges).
_EDGE_COLUMNS: Final = (
    *EDGE_KEY, "src_name", "dst_name", "src_ips", "dst_ips", "dns_names", "connections",
    "first_seen", "last_seen", "windows",
)  # fmt: skip


def _in_scope(namespace: str, config: RecommendConfig) -> bool:
    explicit = namespace in config.namespaces
    if config.namespaces and not any(fnmatch.fnmatchcase(namespace, p) for p in config.namespaces):
        return False
    if explicit:
        return True
    return not any(fnmatch.fnmatchcase(namespace, p) for p in config.exclude_namespaces)


Pairs = tuple[tuple[str, str], ...]


def _workload_maps(table: pa.Table) -> dict[tuple[str, str], list[Pairs | None]]:
    """Every workload's observed label maps as (key, value) pairs (None: a row without
    labels), in the order first seen, each map object once: a pod's rows repeat its map,
    and every consumer asks only whether some map matches, or for the first one."""
    rows = label_rows(table)
    out: dict[tuple[str, str], list[Pairs | None]] = {}
    if not rows:
        return out
    namespaces, workloads, maps = zip(*rows, strict=True)
    # (namespace, workload, id of the map) -> map: the distinct rows, first seen first (the
    # maps stay alive in label_rows' list, so no id is reused meanwhile)
    keys = zip(namespaces, workloads, map(id, maps), strict=True)
    for (namespace, workload, _), labels in dict(zip(keys, maps, strict=True)).items():
        found = out.get((namespace, workload))
        if found is None:
            found = out[(namespace, workload)] = []
        found.append(labels)
    return out


class _LabelSets(Mapping[tuple[str, str], list[dict[str, str]]]):
    """Every workload's observed label maps as dicts (empty list: none observed), made on
    first use: only a widening, a compaction or a refused-flow check reads them, and making
    a dict of every pod's map was a tenth of synthesis on a wide cluster."""

    def __init__(self, maps: dict[tuple[str, str], list[Pairs | None]]) -> None:
        self._maps = maps
        self._sets: dict[tuple[str, str], list[dict[str, str]]] | None = None

    def _made(self) -> dict[tuple[str, str], list[dict[str, str]]]:
        if self._sets is None:
            as_dict: dict[int, dict[str, str]] = {}  # one dict per map object
            self._sets = {
                key: [
                    as_dict.get(id(m)) or as_dict.setdefault(id(m), dict(m)) for m in maps if m
                ]
                for key, maps in self._maps.items()
            }
        return self._sets

    def __getitem__(self, key: tuple[str, str]) -> list[dict[str, str]]:
        return self._made()[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._maps)

    def __len__(self) -> int:
        return len(self._maps)


def _common_of(maps: Sequence[Pairs | None]) -> dict[str, str]:
    """:func:`~recommender.aggregate.selectors.common_labels` of the maps (as dicts; None
    maps left out), without a dict of a map equal to the first."""
    present = [m for m in maps if m]
    if not present:
        return {}
    first = present[0]
    # stable_labels(dict(first)) in one step (a key given twice: its last value, first place)
    common = {
        k: v for k, v in first if k not in VOLATILE_LABELS and not k.startswith(VOLATILE_PREFIXES)
    }
    for other in present[1:]:
        if not common:
            break
        if other == first:
            continue
        labels = dict(other)
        common = {k: v for k, v in common.items() if labels.get(k) == v}
    return common


def _valid_labels(
    labels: dict[str, str],
    where: str,
    findings: Findings,
    known: set[tuple[str, str]] | None = None,
) -> dict[str, str]:
    """``labels`` with valid keys and values; the others reported. ``known`` remembers the
    valid pairs across calls (a cluster repeats the same few thousands times)."""
    valid = {}
    for key, value in labels.items():
        if known is not None and (key, value) in known:
            valid[key] = value
        elif is_label_key(key) and is_label_value(value):
            valid[key] = value
            if known is not None:
                known.add((key, value))
        else:
            findings.invalid_labels.append(
                {"workload": where, "key": key[:100], "value": value[:100]}
            )
    return valid


def _ports(
    edge: dict[str, Any], config: RecommendConfig, rejected: Collection[tuple[Any, ...]] = ()
) -> list[PortSpec]:
    protocol, port = edge["protocol"], edge["dst_port"]
    if port is None:
        return [PortSpec(protocol)]
    # A rejected DNS edge is kept only for the companion it implies (see decided.py); any
    # port a decisions file rejects is left out.
    specs = []
    if not rejected or dns_companion(edge, protocol) not in rejected:
        specs.append(PortSpec(protocol, int(port)))
    if config.dns_both_protocols and int(port) == 53 and protocol in ("UDP", "TCP"):
        other = "TCP" if protocol == "UDP" else "UDP"
        if not rejected or dns_companion(edge, other) not in rejected:
            specs.append(PortSpec(other, 53))
    return specs


def dns_companion(edge: Mapping[str, Any], protocol: str) -> tuple[Any, ...]:
    """The key (:data:`~recommender.aggregate.edges.EDGE_KEY`) of ``edge`` on ``protocol``:
    the DNS edge ``dns_both_protocols`` allows along with an observed one."""
    return tuple(protocol if k == "protocol" else edge[k] for k in EDGE_KEY)


def _cidr(ip: str) -> str:
    net = ipaddress.ip_network(ip)
    return str(net)


def _compress_ports(
    ports: Iterable[PortSpec],
    budget: int,
    blocked: Callable[[str], tuple[list[int], bool]] | None = None,
) -> tuple[PortSpec, ...]:
    """Sorted ports; with a budget, neighbouring ports merge into ranges (``endPort``).

    ``blocked(protocol)`` gives the refused ports of the peer (and whether a refused flow had
    no port): a range never spans one of them, and with a portless one no range is made.
    """
    by_proto: dict[str, list[PortSpec]] = defaultdict(list)
    for spec in set(ports):
        by_proto[spec.protocol].append(spec)
    out: list[PortSpec] = []
    for protocol in sorted(by_proto):
        specs = by_proto[protocol]
        if any(s.port is None for s in specs):
            out.append(PortSpec(protocol))
            continue
        numbers = sorted(
            {p for s in specs for p in range(s.port or 0, (s.end_port or s.port or 0) + 1)}
        )
        walls, portless = blocked(protocol) if blocked is not None and budget > 0 else ([], False)
        if budget <= 0 or portless:
            out.extend(PortSpec(protocol, n) for n in numbers)
            continue
        ranges = [[numbers[0], numbers[0]]]
        spent = 0
        for n in numbers[1:]:
            gap = n - ranges[-1][1] - 1
            if spent + gap <= budget and free_between(walls, ranges[-1][1], n):
                spent += gap
                ranges[-1][1] = n
            else:
                ranges.append([n, n])
        out.extend(PortSpec(protocol, a, b if b != a else None) for a, b in ranges)
    return tuple(out)


def _peer_key(peer: Peer) -> tuple[Any, ...]:
    return (
        peer.kind,
        peer.namespace_selector.match_labels if peer.namespace_selector else (),
        peer.pod_selector.match_labels if peer.pod_selector else (),
        ipaddress.ip_network(peer.cidr).version if peer.cidr else 0,
        int(ipaddress.ip_network(peer.cidr).network_address) if peer.cidr else 0,
        peer.cidr or "",
        peer.entity or "",
    )


def _describe_ports(ports: tuple[PortSpec, ...]) -> list[str]:
    out = []
    for p in ports:
        if p.port is None:
            out.append(f"{p.protocol}/*")
        elif p.end_port:
            out.append(f"{p.protocol}/{p.port}-{p.end_port}")
        else:
            out.append(f"{p.protocol}/{p.port}")
    return out


def _describe_peer(peer: Peer) -> str:
    if peer.kind == "cidr":
        return f"ipBlock {peer.cidr}" + (
            f" except {','.join(peer.except_)}" if peer.except_ else ""
        )
    ns = (
        dict(peer.namespace_selector.match_labels).get(NAMESPACE_LABEL)
        if peer.namespace_selector
        else None
    )
    pods = (
        ",".join(f"{k}={v}" for k, v in peer.pod_selector.match_labels)
        if peer.pod_selector
        else "*"
    )
    return f"{ns + '/' if ns else ''}{pods or '*'}"


class _Builder:
    """Collects peers per policy and direction, then emits sorted rules."""

    def __init__(
        self,
        config: RecommendConfig,
        findings: Findings,
        refused: RefusedSet | Callable[[], RefusedSet] | None = None,
        labels: Mapping[tuple[str, str], Sequence[Mapping[str, str]]] | None = None,
        rejected: Collection[tuple[Any, ...]] = (),
    ) -> None:
        self.config = config
        self.findings = findings
        self.rejected = rejected
        self._refused = refused
        self.labels = labels if labels is not None else {}
        # (namespace, workload) -> IP version -> the "internet" evidence, and per public
        # source address the edges it was seen in (to name it exactly when it is carved out)
        self.internet: dict[tuple[str, str], dict[int, _Acc]] = defaultdict(dict)
        self.internet_members: dict[tuple[str, str], dict[int, dict[str, list[Any]]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        # (namespace, workload) -> direction -> (peer id, mesh role) -> _Acc; Istio's own ports
        # (policy.mesh) are kept apart from the application ports under their role. A peer is
        # keyed by the id of the one object kept for all equal peers (:meth:`_peer_id`), so
        # that adding evidence hashes two small values, not the peer's selectors.
        self.peers: dict[tuple[str, str], dict[str, dict[tuple[int, str], _Acc]]] = defaultdict(
            lambda: {"ingress": defaultdict(_Acc), "egress": defaultdict(_Acc)}
        )
        self._canonical: dict[Peer, Peer] = {}
        self._peer_of: dict[int, Peer] = {}  # id -> the kept peer (kept alive here)
        # (protocol, port) -> the ports and mesh role of an edge (when no port is rejected)
        self._port_roles: dict[tuple[Any, Any], tuple[tuple[PortSpec, ...], str]] = {}
        # per kept peer (by id) and per distinct port tuple: what rules sort and print by
        self._peer_keys: dict[int, tuple[Any, ...]] = {}
        self._peer_texts: dict[int, str] = {}
        self._compressed: dict[tuple[frozenset[PortSpec], bool], tuple[PortSpec, ...]] = {}
        self._port_tuples: dict[tuple[PortSpec, ...], tuple[PortSpec, ...]] = {}
        self._port_keys: dict[int, list[tuple[str, int, int]]] = {}
        self._port_texts: dict[int, list[str]] = {}
        # (namespace, workload) -> direction -> (ip, mesh role) -> _Acc (external addresses)
        self.addresses: dict[tuple[str, str], dict[str, dict[tuple[str, str], _Acc]]] = (
            defaultdict(lambda: {"ingress": defaultdict(_Acc), "egress": defaultdict(_Acc)})
        )

    def _peer_id(self, peer: Peer) -> int:
        """The id of the kept object equal to ``peer`` (``peer`` itself when it is the first)."""
        key = id(peer)
        if self._peer_of.get(key) is not peer:
            peer = self._canonical.setdefault(peer, peer)
            key = id(peer)
            self._peer_of[key] = peer
        return key

    def _ports_role(self, edge: dict[str, Any]) -> tuple[Sequence[PortSpec], str]:
        """:func:`_ports` and :func:`_mesh_role` of ``edge``, once per (protocol, port)."""
        key = (edge["protocol"], edge["dst_port"])
        found = self._port_roles.get(key)
        if found is None:
            found = self._port_roles[key] = (tuple(_ports(edge, self.config)), _mesh_role(edge))
        if self.rejected:  # the ports then depend on the edge's ends
            return _ports(edge, self.config, self.rejected), found[1]
        return found

    def pods(
        self,
        owner: tuple[str, str],
        direction: str,
        peer: Peer,
        edge: dict[str, Any],
        flags: Iterable[str] = (),
    ) -> None:
        found = self._port_roles.get((edge["protocol"], edge["dst_port"]))
        ports, role = found if found is not None and not self.rejected else self._ports_role(edge)
        if ports:  # (an empty port list would read as every port)
            key = id(peer)
            if self._peer_of.get(key) is not peer:
                key = self._peer_id(peer)
            self.peers[owner][direction][(key, role)].add(edge, ports, flags)

    def address(
        self,
        owner: tuple[str, str],
        direction: str,
        ip: str,
        edge: dict[str, Any],
        flags: Iterable[str] = (),
    ) -> None:
        ports, role = self._ports_role(edge)
        if ports:
            self.addresses[owner][direction][(ip, role)].add(edge, ports, flags)

    def cidr(
        self,
        owner: tuple[str, str],
        direction: str,
        cidr: str,
        edge: dict[str, Any],
        flags: Iterable[str] = (),
        except_: tuple[str, ...] = (),
    ) -> None:
        peer = Peer("cidr", cidr=cidr, except_=except_)
        self.pods(owner, direction, peer, edge, flags)

    def internet_source(
        self,
        owner: tuple[str, str],
        ip: str,
        edge: dict[str, Any],
        flags: Iterable[str] = (),
    ) -> None:
        """Evidence from one of more than ``internet_ingress_sources`` public sources."""
        version = ipaddress.ip_address(ip).version
        acc = self.internet[owner].setdefault(version, _Acc())
        members = self.internet_members[owner][version]
        if not any(e is edge for e, _ in members.get(ip, ())):
            members.setdefault(ip, []).append((edge, tuple(flags)))
        if acc.edge_ids is None:
            acc.edge_ids = set()
        if id(edge) not in acc.edge_ids:  # edges live as long as synthesis: ids stay unique
            acc.edge_ids.add(id(edge))
            acc.add(edge, _ports(edge, self.config), flags)

    @property
    def refused(self) -> RefusedSet:
        """The refused set, built on first use: only a widening needs it."""
        if not isinstance(self._refused, RefusedSet):
            self._refused = self._refused() if self._refused is not None else RefusedSet()
        return self._refused

    def _blocked(
        self, owner: tuple[str, str], direction: str, peer: Peer, protocol: str
    ) -> tuple[list[int], bool]:
        return self.refused.blocked_ports(owner, direction, peer, protocol, self.labels)

    def _internet(self, owner: tuple[str, str]) -> None:
        """The "internet" peers of ``owner``: every public address, with every special-purpose
        block and every source refused on the rule's ports carved out (sources that were also
        observed come back as exact addresses); not made when a refused source's address is
        unknown."""
        for version, acc in sorted(self.internet.get(owner, {}).items()):
            members = self.internet_members[owner][version]
            refused: set[str] = set()
            if self.refused.unknown_peer(owner, "ingress", acc.ports):
                carved = set(members)
                found = None
            else:
                refused = self.refused.addresses(owner, "ingress", acc.ports)
                carved = {ip for ip in refused if ip in members}
                found = carve_block(public_universe(version), refused)
            held = ["internet-held-back"] if found is None else []
            for ip in sorted(carved):
                for edge, flags in members[ip]:
                    self.address(
                        owner, "ingress", ip, edge, [*flags, *_external_flags(ip), *held]
                    )
            if found is None:
                continue
            cidr, except_ = found
            peer = Peer("cidr", cidr=cidr, except_=except_)
            target = self.peers[owner]["ingress"][(self._peer_id(peer), "")]
            _absorb(target, acc)
            target.flags.add("internet")
            if any(classify_address(ip) == "public" for ip in refused):
                target.flags.add("refused-carved")

    def _merge_addresses(self, owner: tuple[str, str], direction: str) -> None:
        """Turn per-address evidence into CIDR peers: grouped by port set, merged per class."""
        by_ports: dict[tuple[tuple[PortSpec, ...], str], dict[str, _Acc]] = defaultdict(dict)
        for (ip, role), acc in self.addresses[owner][direction].items():
            by_ports[(tuple(sorted(acc.ports)), role)][ip] = acc
        peers = self.peers[owner][direction]
        for (_ports_key, role), members in sorted(by_ports.items()):
            classes: dict[tuple[str, int], list[str]] = defaultdict(list)
            for ip in members:
                classes[(classify_address(ip), ipaddress.ip_address(ip).version)].append(ip)
            specs = list(_ports_key)
            for (cls, _version), ips in sorted(classes.items()):
                # Widening adds unobserved addresses: only public ones, never a refused peer
                # (or none at all when a refused peer's address is unknown).
                budget = self.config.cidr_budget if is_public(cls) else 0
                forbidden: set[str] = set()
                if budget and self.refused.unknown_peer(owner, direction, specs):
                    budget = 0
                elif budget:
                    forbidden = self.refused.addresses(owner, direction, specs)
                for cidr in merge_cidrs(ips, budget=budget, forbidden=sorted(forbidden)):
                    net = ipaddress.ip_network(cidr)
                    covered = [ip for ip in ips if ipaddress.ip_address(ip) in net]
                    target = peers[(self._peer_id(Peer("cidr", cidr=cidr)), role)]
                    for ip in covered:
                        _absorb(target, members[ip])
                    if net.num_addresses > len(covered):
                        target.flags.add("merged-cidr")

    def _compress(
        self, owner: tuple[str, str], direction: str, pid: int, role: str, acc: _Acc
    ) -> tuple[PortSpec, ...]:
        """:func:`_compress_ports` of a peer's ports, one tuple object per distinct result:
        without a range budget it depends on the port set only, so it is made once per set."""
        budget = 0 if role else self.config.port_range_budget  # mesh ports join no range
        if budget > 0:
            blocked = partial(self._blocked, owner, direction, self._peer_of[pid])
            ports = _compress_ports(acc.ports, budget, blocked)
            return self._port_tuples.setdefault(ports, ports)
        key = (frozenset(acc.ports), bool(role))
        found = self._compressed.get(key)
        if found is None:
            ports = _compress_ports(key[0], 0)
            found = self._compressed[key] = self._port_tuples.setdefault(ports, ports)
        return found

    def _peer_key(self, pid: int) -> tuple[Any, ...]:
        found = self._peer_keys.get(pid)
        if found is None:
            found = self._peer_keys[pid] = _peer_key(self._peer_of[pid])
        return found

    def _peer_text(self, pid: int) -> str:
        found = self._peer_texts.get(pid)
        if found is None:
            found = self._peer_texts[pid] = _describe_peer(self._peer_of[pid])
        return found

    def _ports_key(self, ports: tuple[PortSpec, ...]) -> list[tuple[str, int, int]]:
        found = self._port_keys.get(id(ports))  # (kept alive in _port_tuples)
        if found is None:
            found = self._port_keys[id(ports)] = [
                (p.protocol, p.port or 0, p.end_port or 0) for p in ports
            ]
        return found

    def _ports_text(self, ports: tuple[PortSpec, ...]) -> list[str]:
        found = self._port_texts.get(id(ports))
        if found is None:
            found = self._port_texts[id(ports)] = _describe_ports(ports)
        return list(found)

    def policies(self, selectors: dict[tuple[str, str], SelectorChoice]) -> list[Policy]:
        config = self.config
        rare = config.rare_connections
        peer_of = self._peer_of
        record = self.findings.rules.append
        out: list[Policy] = []
        owners = sorted(set(self.peers) | set(self.addresses) | set(self.internet))
        for owner in owners:
            namespace, workload = owner
            if owner in self.internet:
                self._internet(owner)
            if owner in self.addresses:
                for direction in ("ingress", "egress"):
                    self._merge_addresses(owner, direction)
            name = safe_name(f"{config.policy_prefix}{workload}")
            rules: dict[str, list[Rule]] = {"ingress": [], "egress": []}
            mesh_rules = False
            for direction, entries in self.peers[owner].items():
                if not entries:
                    continue
                # (id of the ports tuple, role) -> (ports, [(peer id, evidence)])
                grouped: dict[
                    tuple[int, str], tuple[tuple[PortSpec, ...], list[tuple[int, _Acc]]]
                ] = {}
                for (pid, role), acc in entries.items():
                    ports = self._compress(owner, direction, pid, role, acc)
                    group = grouped.get((id(ports), role))
                    if group is None:
                        group = grouped[(id(ports), role)] = (ports, [])
                    group[1].append((pid, acc))
                built: list[tuple[list[tuple[int, _Acc]], Rule]] = []
                for (_, role), (ports, members) in grouped.items():
                    if len(members) == 1:  # (most rules: the same as below, more directly)
                        acc = members[0][1]
                        peers: tuple[Peer, ...] = (peer_of[members[0][0]],)
                        connections, first, last = acc.connections, acc.first, acc.last
                        windows, flags = acc.windows, set(acc.flags)
                    else:
                        members.sort(key=lambda m: self._peer_key(m[0]))
                        peers = tuple(peer_of[m[0]] for m in members)
                        connections = sum(m[1].connections for m in members)
                        firsts = [m[1].first for m in members if m[1].first]
                        lasts = [m[1].last for m in members if m[1].last]
                        first = min(firsts) if firsts else None
                        last = max(lasts) if lasts else None
                        windows = max(m[1].windows for m in members)
                        flags = set().union(*(m[1].flags for m in members))
                    decided_only = ALLOW_FLAG in flags and connections == 0
                    if connections < rare and not decided_only:
                        flags.add("rare")
                    if role:
                        flags.add(f"mesh:{role}")
                        mesh_rules = True
                    evidence = Evidence(
                        connections, first or None, last or None, windows, tuple(sorted(flags))
                    )
                    rule = Rule(direction, peers, ports, evidence=evidence)  # type: ignore[arg-type]
                    built.append((members, rule))
                if len(built) > 1:  # (stable: equal keys keep their order)
                    built.sort(
                        key=lambda b: (
                            self._ports_key(b[1].ports),
                            [self._peer_key(m[0]) for m in b[0]],
                        )
                    )
                kept = rules[direction]
                for members, rule in built:
                    kept.append(rule)
                    evidence = rule.evidence
                    record(
                        RuleRecord(
                            namespace,
                            name,
                            workload,
                            direction,
                            [self._peer_text(m[0]) for m in members],
                            self._ports_text(rule.ports),
                            evidence.connections,
                            evidence.first_seen,
                            evidence.last_seen,
                            evidence.windows,
                            list(evidence.flags),
                        )
                    )
            annotations: tuple[tuple[str, str], ...] = (
                ("recommender.io/workload", workload[:253]),
            )
            if mesh_rules:  # (only a rule on a mesh port has a mesh: flag)
                mesh = _mesh_annotation(rules["ingress"] + rules["egress"])
                if mesh:
                    annotations = tuple(sorted((*annotations, (MESH_PORTS_ANNOTATION, mesh))))
            out.append(
                Policy(
                    name=name,
                    namespace=namespace,
                    selector=selectors[owner].selector,
                    ingress=tuple(rules["ingress"]),
                    egress=tuple(rules["egress"]),
                    labels=MANAGED_BY,
                    annotations=annotations,
                    description=f"Observed traffic of {namespace}/{workload}.",
                )
            )
        return out


def _mesh_role(edge: dict[str, Any]) -> str:
    """The Istio role of the edge's destination port ("" for an application port)."""
    found = mesh_port(edge["protocol"], edge["dst_port"])
    return found.role if found is not None else ""


def _mesh_annotation(rules: list[Rule]) -> str:
    """``ingress TCP/15008 (hbone); egress TCP/15012 (control-plane)`` for the mesh rules."""
    parts = []
    for rule in rules:
        roles = [f[len("mesh:") :] for f in rule.evidence.flags if f.startswith("mesh:")]
        if roles:
            ports = ",".join(_describe_ports(rule.ports))
            parts.append(f"{rule.direction} {ports} ({roles[0]})")
    return "; ".join(dict.fromkeys(parts))


def synthesize(
    tables: EdgeTables,
    config: RecommendConfig | None = None,
    refused: RefusedSet | None = None,
    *,
    unmanaged: Collection[str] = (),
    allowed: Collection[tuple[Any, ...]] = (),
    rejected: Collection[tuple[Any, ...]] = (),
) -> tuple[PolicySet, Findings]:
    """Derive least-privilege policies from aggregated edges.

    Parameters
    ----------
    tables
        The output of :func:`recommender.aggregate.edges.aggregate_edges`.
    config
        Scope, budgets and thresholds (see :class:`~recommender.config.RecommendConfig`).
    refused
        What no widening may admit (:class:`~recommender.synthesis.refused.RefusedSet`);
        by default the denied and excluded edges of ``tables``
        (:meth:`~recommender.synthesis.refused.RefusedSet.from_tables`). Pass a larger set
        (``RefusedSet.from_tables(t) | RefusedSet.from_edges(failed, "failed")``) to hold back
        more.
    unmanaged
        Namespaces a decisions file excludes: out of scope whatever ``config`` says.
    allowed
        Keys (:data:`~recommender.aggregate.edges.EDGE_KEY`) of edges that exist only because a
        decisions file allows them: their rules are flagged ``decision:allow``, an external
        end named by a CIDR becomes that ipBlock.
    rejected
        Keys of edges a decisions file rejects: ``dns_both_protocols`` does not add them back
        as the other-protocol companion of an observed DNS edge. (Rejected edges are in the
        ``excluded`` table, so no widening admits them either.)

    Returns
    -------
    (PolicySet, Findings)
        The policies (default deny per namespace in scope, one policy per workload with
        traffic) and everything the report needs to explain them.
    """
    config = config or RecommendConfig()
    findings = Findings()
    refused_set: RefusedSet | None = refused

    def get_refused() -> RefusedSet:
        nonlocal refused_set
        if refused_set is None:
            refused_set = RefusedSet.from_tables(tables)
        return refused_set

    # Workload identities and selectors, for every workload seen (peers out of scope too).
    workload_maps = _workload_maps(tables.workload_labels)
    label_sets = _LabelSets(workload_maps)
    common: dict[tuple[str, str], dict[str, str]] = {}
    known_valid: set[tuple[str, str]] = set()
    namespace_ok: dict[str, bool] = {}
    for key, maps in workload_maps.items():
        namespace, workload = key
        if namespace is None or workload is None:
            continue
        ok = namespace_ok.get(namespace)
        if ok is None:
            ok = namespace_ok[namespace] = is_dns1123_label(namespace)
        if not ok:
            if namespace not in findings.invalid_namespaces:
                findings.invalid_namespaces.append(namespace)
            continue
        valid = _common_of(maps)
        if not known_valid.issuperset(valid.items()):  # (else every pair is known valid)
            valid = _valid_labels(valid, f"{namespace}/{workload}", findings, known_valid)
        if not valid and not is_label_value(workload):  # (common labels are all stable)
            # The fallback selector app=<workload> cannot carry this name: leave the workload
            # out (its traffic gets no rule) and report it, rather than fail the whole run.
            findings.invalid_labels.append(
                {"workload": f"{namespace}/{workload}"[:200], "key": "app", "value": workload[:100]}
            )
            continue
        common[key] = valid
    findings.selectors = choose_selectors(common, stable=True)  # (common labels are stable)
    selectors = findings.selectors
    namespaces = sorted({ns for ns, _ in selectors})
    findings.namespaces_in_scope = [
        ns for ns in namespaces if _in_scope(ns, config) and ns not in unmanaged
    ]
    findings.namespaces_out_of_scope = [
        ns for ns in namespaces if ns not in findings.namespaces_in_scope
    ]
    in_scope = set(findings.namespaces_in_scope)

    made: dict[tuple[str, str, bool], int | None] = {}

    def pod_pid(namespace: str, workload: str, owner_ns: str) -> int | None:
        """The builder's id of the peer standing for a workload (None: no selector), the
        peer made once per workload and side of a namespace."""
        key = (namespace, workload, namespace == owner_ns)
        found = made.get(key, -1)
        if found != -1:
            return found
        choice = selectors.get((namespace, workload))
        pid = None
        if choice is not None:
            ns_sel = None if key[2] else LabelSelector.of({NAMESPACE_LABEL: namespace})
            peer = Peer("pods", namespace_selector=ns_sel, pod_selector=choice.selector)
            pid = builder._peer_id(peer)
        made[key] = pid
        return pid

    def pod_peer(namespace: str, workload: str, owner_ns: str) -> Peer | None:
        pid = pod_pid(namespace, workload, owner_ns)
        return None if pid is None else builder._peer_of[pid]

    builder = _Builder(config, findings, get_refused, label_sets, rejected)
    by_owner = builder.peers
    present = set(tables.edges.column_names)
    edges = table_rows(tables.edges, [c for c in _EDGE_COLUMNS if c in present])

    # Public ingress sources per (workload, ports): many distinct clients => "the internet".
    public_sources: dict[tuple[str, str, str, Any], set[str]] = defaultdict(set)
    for e in edges:
        if e["dst_kind"] == "workload" and e["src_kind"] == "external":
            for ip in e["src_ips"] or ():
                if is_public(classify_address(ip)):
                    public_sources[
                        (e["dst_namespace"], e["dst_id"], e["protocol"], e["dst_port"])
                    ].add(ip)

    for e in edges:
        if e["protocol"] not in _K8S_PROTOCOLS:
            findings.not_expressible.append(
                {
                    "source": f"{e['src_namespace'] or e['src_kind']}/{e['src_id']}",
                    "destination": f"{e['dst_namespace'] or e['dst_kind']}/{e['dst_id']}",
                    "protocol": e["protocol"],
                    "connections": e["connections"],
                    "why": "Kubernetes NetworkPolicy matches only TCP, UDP and SCTP",
                }
            )
            continue
        flags = [] if e["dst_port"] is not None else ["all-ports"]
        if allowed and tuple(e[k] for k in EDGE_KEY) in allowed:
            flags.append(ALLOW_FLAG)
        src_kind, dst_kind = e["src_kind"], e["dst_kind"]
        ports_role = None  # (the edge's ports and mesh role, as builder.pods finds them)
        # Egress side: the source workload's policy (a workload peer directly, as _add_peer
        # and builder.pods would add it).
        if src_kind == "workload" and e["src_namespace"] in in_scope:
            owner = (e["src_namespace"], e["src_id"])
            if owner in selectors:
                if dst_kind == "workload":
                    pid = pod_pid(e["dst_namespace"], e["dst_id"], owner[0])
                    if pid is not None:
                        ports_role = builder._ports_role(e)
                        if ports_role[0]:  # (an empty port list would read as every port)
                            by_owner[owner]["egress"][(pid, ports_role[1])].add(
                                e, ports_role[0], flags
                            )
                else:
                    _add_peer(
                        builder, owner, "egress", e, flags, pod_peer, public_sources, config,
                        findings,
                    )  # fmt: skip
        # Ingress side: the destination workload's policy.
        if dst_kind == "workload" and e["dst_namespace"] in in_scope:
            owner = (e["dst_namespace"], e["dst_id"])
            if owner in selectors:
                if src_kind == "workload":
                    pid = pod_pid(e["src_namespace"], e["src_id"], owner[0])
                    if pid is not None:
                        ports_role = ports_role or builder._ports_role(e)
                        if ports_role[0]:
                            by_owner[owner]["ingress"][(pid, ports_role[1])].add(
                                e, ports_role[0], flags
                            )
                else:
                    _add_peer(
                        builder, owner, "ingress", e, flags, pod_peer, public_sources, config,
                        findings,
                    )  # fmt: skip
        if e["dst_kind"] == "external":
            for ip in e["dst_ips"] or ():
                findings.external.append(
                    {
                        "direction": "egress",
                        "address": ip,
                        "class": classify_address(ip),
                        "from": f"{e['src_namespace']}/{e['src_id']}"
                        if e["src_namespace"]
                        else e["src_id"],
                        "port": f"{e['protocol']}/{e['dst_port']}",
                        "connections": e["connections"],
                        "dns_names": list(e["dns_names"] or ()),
                    }
                )
        if e["src_kind"] == "external":
            for ip in e["src_ips"] or ():
                findings.external.append(
                    {
                        "direction": "ingress",
                        "address": ip,
                        "class": classify_address(ip),
                        "to": f"{e['dst_namespace']}/{e['dst_id']}"
                        if e["dst_namespace"]
                        else e["dst_id"],
                        "port": f"{e['protocol']}/{e['dst_port']}",
                        "connections": e["connections"],
                    }
                )

    owners = sorted(set(builder.peers) | set(builder.addresses) | set(builder.internet))
    policies = builder.policies(selectors)
    findings.workload_policies = dict(zip(owners, policies, strict=True))
    if config.compact_policies:
        policies = _compact(
            policies, owners, tables, common, label_sets, config, findings, get_refused
        )
    for namespace in findings.namespaces_in_scope:
        policies.append(
            Policy(
                name="default-deny",
                namespace=namespace,
                selector=LabelSelector(),
                labels=MANAGED_BY,
                description="Deny all ingress and egress not allowed by another policy.",
            )
        )
    return PolicySet(tuple(policies)), findings


def _compact(
    policies: list[Policy],
    owners: list[tuple[str, str]],
    tables: EdgeTables,
    common: dict[tuple[str, str], dict[str, str]],
    label_sets: Mapping[tuple[str, str], list[dict[str, str]]],
    config: RecommendConfig,
    findings: Findings,
    refused: Callable[[], RefusedSet],
) -> list[Policy]:
    """Workloads with identical rules (or within ``compaction_budget``) share one policy;
    a budgeted merge never hands a member a grant that admits one of its refused flows."""
    from ..analysis.clustering.compaction import compact

    clusters = None
    if config.compaction_budget > 0:
        from ..analysis.clustering.core import BehaviourCore
        from ..analysis.clustering.features import communication_features

        features = communication_features(tables)
        if features.workloads:
            model = BehaviourCore(distance_threshold=config.cluster_distance, random_state=0)
            labels = model.fit(features.matrix, groups=features.namespaces).labels_
            clusters = dict(zip(features.workloads, labels.tolist(), strict=True))
    compacted, findings.compaction = compact(
        policies,
        owners,
        findings.selectors,
        common,
        label_sets,
        prefix=config.policy_prefix,
        budget=config.compaction_budget,
        clusters=clusters,
        admits_refused=lambda owner, added: any(
            refused().admits(owner, direction, peer, port, label_sets)
            for direction, peer, port in added
        ),
    )
    if findings.compaction:
        shared = {(r["namespace"], r["policy"]): r["workloads"] for r in findings.compaction}
        workload_of = {(p.namespace, p.name): o[1] for o, p in zip(owners, policies, strict=True)}
        findings.rules = [
            RuleRecord(
                policy.namespace,
                policy.name,
                ",".join(shared[(policy.namespace, policy.name)])
                if (policy.namespace, policy.name) in shared
                else workload_of[(policy.namespace, policy.name)],
                rule.direction,
                [_describe_peer(p) for p in rule.peers],
                _describe_ports(rule.ports),
                rule.evidence.connections,
                rule.evidence.first_seen,
                rule.evidence.last_seen,
                rule.evidence.windows,
                list(rule.evidence.flags),
            )
            for policy in compacted
            for rule in policy.rules
        ]
    return compacted


def _is_network(text: Any) -> bool:
    try:
        ipaddress.ip_network(str(text))
    except ValueError:
        return False
    return True


def _external_flags(ip: str) -> list[str]:
    cls = classify_address(ip)
    return [] if cls in ("public", "private") else [f"address-class:{cls}"]


def _add_peer(
    builder: _Builder,
    owner: tuple[str, str],
    direction: str,
    e: dict[str, Any],
    flags: list[str],
    pod_peer: Any,
    public_sources: dict[Any, set[str]],
    config: RecommendConfig,
    findings: Findings,
) -> None:
    """Add the far end of edge ``e`` as a peer of ``owner``'s ``direction`` rules."""
    side = "dst" if direction == "egress" else "src"
    kind = e[f"{side}_kind"]
    if kind == "workload":
        peer = pod_peer(e[f"{side}_namespace"], e[f"{side}_id"], owner[0])
        if peer is not None:
            builder.pods(owner, direction, peer, e, flags)
        return
    ips = list(e[f"{side}_ips"] or ())
    if direction == "ingress" and kind == "host" and config.allow_node_probes:
        findings.node_local.append(
            {
                "workload": f"{owner[0]}/{owner[1]}",
                "from": ",".join(ips) or "node",
                "port": f"{e['protocol']}/{e['dst_port']}",
                "connections": e["connections"],
                "why": "traffic from the pod's own node (kubelet probes) is always allowed",
            }
        )
        return
    if kind in ("host", "remote-node"):
        flags = [*flags, "node-address"]
    elif kind == "cluster-entity":
        flags = [*flags, f"entity:{e[f'{side}_name'] or e[f'{side}_id']}"]
    elif kind == "unknown":
        flags = [*flags, "unknown-endpoint"]
    if direction == "ingress" and kind == "external":
        public = public_sources.get((owner[0], owner[1], e["protocol"], e["dst_port"]), set())
        if len(public) > config.internet_ingress_sources:
            for ip in ips:
                if ip in public:
                    builder.internet_source(owner, ip, e, flags)
            ips = [ip for ip in ips if ip not in public]
            if not ips:
                return
    if ips:
        for ip in ips:
            builder.address(owner, direction, ip, e, [*flags, *_external_flags(ip)])
        return
    # Aggregated records without addresses (Calico pub/pvt/NetworkSet): the broad fallback.
    name = e[f"{side}_name"] or e[f"{side}_id"]
    if ALLOW_FLAG in flags and _is_network(name):  # an address block a decision allows
        builder.cidr(owner, direction, str(ipaddress.ip_network(name)), e, flags)
        return
    if name == "pvt":
        for cidr in _PRIVATE_V4:
            builder.cidr(owner, direction, cidr, e, [*flags, "broad:private-networks"])
    else:
        except_ = _PRIVATE_V4 if name == "pub" else ()
        builder.cidr(owner, direction, "0.0.0.0/0", e, [*flags, f"broad:{name}"], except_)
