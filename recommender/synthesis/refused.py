"""The refused set: what every widening is computed against.

A *widening* is any rule that admits more than was observed: the internet-ingress threshold
(``internet_ingress_sources``), CIDR merging (``cidr_budget``), port ranges
(``port_range_budget``) and budgeted policy compaction (``compaction_budget``). Each one is
checked against a :class:`RefusedSet`, the connections the input shows must not be allowed:

* ``denied`` flows (the cluster said no);
* flows that never established (``failed``) and flows excluded on purpose (anomaly screening,
  suspected replies, ephemeral ports, below ``min_connections``): any edge-shaped table plugs in
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

from ..aggregate.edges import EdgeTables
from ..policy.model import LabelSelector, Peer, PortSpec

__all__ = ["Refused", "RefusedSet", "peer_admits_workload"]

Owner = tuple[str, str]
#: A workload peer ``(namespace, name)``, an IP address, or None (an address not known).
PeerRef = tuple[str, str] | str | None

NAMESPACE_LABEL: Final = "kubernetes.io/metadata.name"


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
        self.items: frozenset[Refused] = frozenset(items)
        self._by: dict[tuple[Owner, str, str], list[Refused]] = defaultdict(list)
        for item in self.items:
            self._by[(item.owner, item.direction, item.protocol)].append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __or__(self, other: RefusedSet) -> RefusedSet:
        return RefusedSet(self.items | other.items)

    @classmethod
    def from_edges(cls, table: pa.Table, reason: str | None = None) -> RefusedSet:
        """Refused connections from any edge-shaped table (``EDGE_KEY`` plus ``src_ips``,
        ``dst_ips``), both ends' views; ``reason`` or the table's own ``reason`` column."""
        items: list[Refused] = []
        if table.num_rows == 0:
            return cls()
        reasons = (
            table.column("reason").to_pylist()
            if reason is None and "reason" in table.column_names
            else [reason or "refused"] * table.num_rows
        )
        for row, why in zip(table.to_pylist(), reasons, strict=True):
            protocol, port = row["protocol"], row["dst_port"]
            port = None if port is None else int(port)
            for local, far, direction in (("dst", "src", "ingress"), ("src", "dst", "egress")):
                if row[f"{local}_kind"] != "workload" or row[f"{local}_namespace"] is None:
                    continue
                owner = (row[f"{local}_namespace"], row[f"{local}_id"])
                peers: list[PeerRef]
                if row[f"{far}_kind"] == "workload" and row[f"{far}_namespace"] is not None:
                    peers = [(row[f"{far}_namespace"], row[f"{far}_id"])]
                else:
                    peers = list(row[f"{far}_ips"] or ()) or [None]
                for peer in peers:
                    items.append(Refused(owner, direction, peer, protocol, port, str(why)))
        return cls(items)

    @classmethod
    def from_tables(cls, tables: EdgeTables) -> RefusedSet:
        """Denied and excluded edges of the aggregation (``reason`` ``denied`` or the
        exclusion's own reason, ``anomaly:scan`` say)."""
        return cls.from_edges(tables.denied, "denied") | cls.from_edges(tables.excluded)

    def of(self, owner: Owner, direction: str, protocol: str) -> list[Refused]:
        """The refused connections of ``owner``'s ``direction`` on ``protocol``."""
        return self._by.get((owner, direction, protocol), [])

    def matching(self, owner: Owner, direction: str, ports: Iterable[PortSpec]) -> list[Refused]:
        """The refused connections a rule of ``owner`` with ``ports`` would reach on its ports
        (whatever their peer); a refused flow without a port counts for every port."""
        out: list[Refused] = []
        for spec in ports:
            for item in self.of(owner, direction, spec.protocol):
                if item.port is None or spec.contains(spec.protocol, item.port):
                    out.append(item)
        return out

    def addresses(self, owner: Owner, direction: str, ports: Iterable[PortSpec]) -> set[str]:
        """Refused peer addresses of ``owner``'s ``direction`` on any of ``ports``."""
        return {
            item.peer
            for item in self.matching(owner, direction, ports)
            if isinstance(item.peer, str)
        }

    def unknown_peer(self, owner: Owner, direction: str, ports: Iterable[PortSpec]) -> bool:
        """Whether a refused connection on ``ports`` has an outside peer of unknown address."""
        return any(item.peer is None for item in self.matching(owner, direction, ports))

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
            for item in self.of(owner, direction, protocol):
                if (
                    port is not None
                    and item.port is not None
                    and not port.contains(protocol, item.port)
                ):
                    continue
                if peer_admits(peer, owner[0], item.peer, labels):
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
        for item in self.of(owner, direction, protocol):
            if peer_admits(peer, owner[0], item.peer, labels):
                if item.port is None:
                    portless = True
                else:
                    ports.add(item.port)
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
