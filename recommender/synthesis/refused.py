"""The refused set: what every widening is computed against.

A *widening* is any rule that admits more than was observed: the internet-ingress threshold
(``internet_ingress_sources``), CIDR merging (``cidr_budget``), port ranges
(``port_range_budget``) and budgeted policy compaction (``compaction_budget``). Each one is
checked against a :class:`RefusedSet`, the connections the input shows must not be allowed:

* ``denied`` flows (the cluster said no);
* flows excluded on purpose, every reason of ``EdgeTables.excluded``: never established (every
  connection failed: ``never-established``), anomaly screening (``anomaly:scan``, ...),
  suspected replies, ephemeral ports, below ``min_connections``;
* flows a guardrail denies (the pipeline adds them) and any other edge-shaped table: it plugs in
  with :meth:`RefusedSet.from_edges` and a reason, and sets combine with ``|``;
* anything else a caller wants kept out: :class:`Refused` items built by hand.

One :class:`Refused` is one (local workload, direction, peer, protocol, port) seen from the side
whose policy would have to admit it: a denied flow from workload ``a`` to ``b`` is refused
*egress* of ``a`` to ``b`` and refused *ingress* of ``b`` from ``a``. A peer is an IP address, a
workload ``(namespace, name)``, or unknown (an aggregated record with no address: then no
address widening of that rule is made at all).

Together with the IANA special-purpose registries (:func:`~recommender.aggregate.addresses.
special_purpose_blocks`), this gives the guarantee synthesis keeps: a widened block carves out
every special-purpose and refused address with ``except`` or is not made; a port range never
spans a refused port of one of its peers; a compaction never hands a member a grant that admits
one of its refused flows. A tuple that was both observed allowed and refused (the same peer and
port, allowed once and denied once) stays allowed by its exact rule, as before: only widening
is held back.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import pyarrow as pa

from ..aggregate.edges import EDGE_KEY, EdgeTables
from ..policy.model import LabelSelector, Peer, PortSpec

__all__ = ["Refused", "RefusedSet", "peer_admits_workload"]

Owner = tuple[str, str]
#: A workload peer ``(namespace, name)``, an IP address, or None (an address not known).
PeerRef = tuple[str, str] | str | None

NAMESPACE_LABEL: Final = "kubernetes.io/metadata.name"
EDGE_COLUMNS: Final = tuple(EDGE_KEY)


@dataclass(frozen=True, order=True)
class Refused:
    """One refused connection as the policy of ``owner`` sees it.

    Attributes
    ----------
    owner
        ``(namespace, workload)`` whose policy would admit it.
    direction
        ``ingress`` (``peer`` is the source) or ``egress`` (``peer`` is the destination).
    peer
        An IP address, a workload ``(namespace, name)``, or None for an outside peer whose
        address the input does not carry.
    protocol, port
        The destination protocol and port (None: the flow had no port).
    reason
        ``denied``, ``failed``, ``excluded:<why>``, ...: for reports, never for matching.
    """

    owner: Owner
    direction: str
    peer: tuple[str, str] | str | None
    protocol: str
    port: int | None
    reason: str = "denied"


class RefusedSet:
    """An indexed set of :class:`Refused` connections (see the module docstring).

    Examples
    --------
    >>> refused = RefusedSet([Refused(("shop", "web"), "ingress", "8.8.8.8", "TCP", 443)])
    >>> sorted(refused.addresses(("shop", "web"), "ingress", [PortSpec("TCP", 443)]))
    ['8.8.8.8']
    >>> refused.addresses(("shop", "web"), "ingress", [PortSpec("TCP", 80)])
    set()
    """

    def __init__(self, items: Iterable[Refused] = ()) -> None:
        # (owner, direction, protocol) -> (port, peer) -> reason: tuples, not objects, so that
        # a hundred thousand excluded edges index in well under a second.
        self._by: dict[tuple[Owner, str, str], dict[tuple[int | None, PeerRef], str]] = defaultdict(
            dict
        )
        for item in items:
            key = (item.owner, item.direction, item.protocol)
            self._by[key].setdefault((item.port, item.peer), item.reason)

    @property
    def items(self) -> frozenset[Refused]:
        """Every refused connection, as :class:`Refused` (the first reason given for each)."""
        return frozenset(
            Refused(owner, direction, peer, protocol, port, reason)
            for (owner, direction, protocol), entries in self._by.items()
            for (port, peer), reason in entries.items()
        )

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._by.values())

    def __or__(self, other: RefusedSet) -> RefusedSet:
        out = RefusedSet()
        for source in (self, other):
            for key, entries in source._by.items():
                mine = out._by[key]
                for entry, reason in entries.items():
                    mine.setdefault(entry, reason)
        return out

    @classmethod
    def from_edges(cls, table: pa.Table, reason: str | None = None) -> RefusedSet:
        """Refused connections from any edge-shaped table (``EDGE_KEY`` plus ``src_ips``,
        ``dst_ips``), both ends' views; ``reason`` or the table's own ``reason`` column."""
        out = cls()
        out._add_edges(table, reason)
        return out

    def _add_edges(self, table: pa.Table, reason: str | None) -> None:
        out = self
        n = table.num_rows
        if n == 0:
            return
        reasons = (
            table.column("reason").to_pylist()
            if reason is None and "reason" in table.column_names
            else [reason or "refused"] * n
        )
        col = {c: table.column(c).to_pylist() for c in (*EDGE_COLUMNS, "src_ips", "dst_ips")}
        protocols, ports = col["protocol"], col["dst_port"]
        for local, far, direction in (("dst", "src", "ingress"), ("src", "dst", "egress")):
            local_kind, local_ns, local_id = (
                col[f"{local}_{c}"] for c in ("kind", "namespace", "id")
            )
            far_kind, far_ns, far_id = (col[f"{far}_{c}"] for c in ("kind", "namespace", "id"))
            far_ips = col[f"{far}_ips"]
            for i in range(n):
                if local_kind[i] != "workload" or local_ns[i] is None:
                    continue
                port = None if ports[i] is None else int(ports[i])
                entries = out._by[((local_ns[i], local_id[i]), direction, protocols[i])]
                why = str(reasons[i])
                if far_kind[i] == "workload" and far_ns[i] is not None:
                    entries.setdefault((port, (far_ns[i], far_id[i])), why)
                else:
                    for peer in far_ips[i] or (None,):
                        entries.setdefault((port, peer), why)

    @classmethod
    def from_tables(cls, tables: EdgeTables) -> RefusedSet:
        """Denied and excluded edges of the aggregation (``reason`` ``denied`` or the
        exclusion's own reason, ``anomaly:scan`` say)."""
        out = cls()
        out._add_edges(tables.denied, "denied")
        out._add_edges(tables.excluded, None)
        return out

    def _of(
        self, owner: Owner, direction: str, protocol: str
    ) -> Iterable[tuple[int | None, PeerRef]]:
        entries = self._by.get((owner, direction, protocol))
        return entries.keys() if entries else ()

    def of(self, owner: Owner, direction: str, protocol: str) -> list[Refused]:
        """The refused connections of ``owner``'s ``direction`` on ``protocol``."""
        entries = self._by.get((owner, direction, protocol), {})
        return [
            Refused(owner, direction, peer, protocol, port, reason)
            for (port, peer), reason in entries.items()
        ]

    def _matching(
        self, owner: Owner, direction: str, ports: Iterable[PortSpec]
    ) -> list[tuple[int | None, PeerRef]]:
        out = []
        for spec in ports:
            for port, peer in self._of(owner, direction, spec.protocol):
                if port is None or spec.contains(spec.protocol, port):
                    out.append((port, peer))
        return out

    def addresses(self, owner: Owner, direction: str, ports: Iterable[PortSpec]) -> set[str]:
        """Refused peer addresses of ``owner``'s ``direction`` on any of ``ports`` (a refused
        flow without a port counts for every port)."""
        return {
            peer for _, peer in self._matching(owner, direction, ports) if isinstance(peer, str)
        }

    def unknown_peer(self, owner: Owner, direction: str, ports: Iterable[PortSpec]) -> bool:
        """Whether a refused connection on ``ports`` has an outside peer of unknown address."""
        return any(peer is None for _, peer in self._matching(owner, direction, ports))

    def admits(
        self,
        owner: Owner,
        direction: str,
        peer: Peer,
        port: PortSpec | None,
        labels: Mapping[Owner, Sequence[Mapping[str, str]]],
    ) -> bool:
        """Whether a grant of ``peer`` on ``port`` (None: every port of every protocol) to
        ``owner``'s ``direction`` admits one of its refused connections.

        ``labels`` gives each workload's observed label maps (none: the assumed
        ``app=<name>``); a ``pods`` peer admits a workload when it selects any of them.
        """
        protocols = [port.protocol] if port is not None else _protocols(self, owner, direction)
        for protocol in protocols:
            for item_port, item_peer in self._of(owner, direction, protocol):
                if (
                    port is not None
                    and item_port is not None
                    and not port.contains(protocol, item_port)
                ):
                    continue
                if peer_admits(peer, owner[0], item_peer, labels):
                    return True
        return False

    def blocked_ports(
        self,
        owner: Owner,
        direction: str,
        peer: Peer,
        protocol: str,
        labels: Mapping[Owner, Sequence[Mapping[str, str]]],
    ) -> tuple[list[int], bool]:
        """Sorted refused ports of ``peer`` (as ``owner``'s ``direction`` sees it) on
        ``protocol``, and whether one had no port (then no range may be made at all)."""
        ports: set[int] = set()
        portless = False
        for item_port, item_peer in self._of(owner, direction, protocol):
            if peer_admits(peer, owner[0], item_peer, labels):
                if item_port is None:
                    portless = True
                else:
                    ports.add(item_port)
        return sorted(ports), portless


def _protocols(refused: RefusedSet, owner: Owner, direction: str) -> list[str]:
    return sorted({p for (o, d, p) in refused._by if o == owner and d == direction})


def peer_admits_workload(
    peer: Peer,
    owner_namespace: str,
    workload: Owner,
    labels: Mapping[Owner, Sequence[Mapping[str, str]]],
) -> bool:
    """Whether a ``pods`` peer of a policy in ``owner_namespace`` selects ``workload``'s pods."""
    if peer.kind != "pods":
        return False
    namespace, name = workload
    if peer.namespace_selector is None:
        if namespace != owner_namespace:
            return False
    elif not peer.namespace_selector.matches({NAMESPACE_LABEL: namespace}):
        return False
    selector = peer.pod_selector or LabelSelector()
    maps = labels.get(workload) or [{"app": name}]
    return any(selector.matches(dict(m)) for m in maps)


def peer_admits(
    peer: Peer,
    owner_namespace: str,
    refused_peer: tuple[str, str] | str | None,
    labels: Mapping[Owner, Sequence[Mapping[str, str]]],
) -> bool:
    """Whether ``peer`` admits a refused peer (a workload, an address, or an unknown one)."""
    if isinstance(refused_peer, tuple):
        return peer_admits_workload(peer, owner_namespace, refused_peer, labels)
    if peer.kind != "cidr" or peer.cidr is None:
        return False
    if refused_peer is None:
        return True  # an unknown outside address may be anywhere in the block
    return address_in(refused_peer, peer.cidr, peer.except_)


def address_in(address: str, cidr: str, except_: Iterable[str] = ()) -> bool:
    """Whether ``address`` is in ``cidr`` and in none of ``except_``."""
    ip = ipaddress.ip_address(address)
    net = ipaddress.ip_network(cidr)
    if ip.version != net.version or ip not in net:
        return False
    return not any(ip in ipaddress.ip_network(e) for e in except_)


def free_between(blocked: list[int], low: int, high: int) -> bool:
    """Whether no port of sorted ``blocked`` lies strictly between ``low`` and ``high``."""
    return bisect.bisect_right(blocked, low) == bisect.bisect_left(blocked, high)
