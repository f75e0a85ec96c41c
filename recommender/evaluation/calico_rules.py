"""Calico rules matched as Felix matches them, on the endpoints and what the flows tell.

Felix (``libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go``) turns every entity rule
(``source``, ``destination``) into one selector over the endpoints' labels; this module does the
same and evaluates it on the labels Calico gives a workload endpoint:

* the pod's labels, ``projectcalico.org/namespace``, ``projectcalico.org/orchestrator: k8s``,
  ``projectcalico.org/serviceaccount`` (when the flows carry it);
* its namespace's labels prefixed ``pcns.`` (with ``pcns.projectcalico.org/name``), its service
  account's name as ``pcsa.projectcalico.org/name`` (other service-account labels are not in
  the flows: a selector reading them is refused);
* a network set's own labels (a namespaced one also its namespace's, as above); an address
  outside the cluster carries the labels of every network set whose ``nets`` hold it, and
  matches a selector when one of them does (Felix's IP sets).

An entity rule's selector is ``selector``, ``serviceAccounts`` (names and ``pcsa.``-prefixed
selector) and the namespace scope ANDed: ``namespaceSelector`` (``pcns.``-prefixed, ``all()``
meaning "in a namespace", ``global()`` "in none"), else the policy's own namespace as soon as any
of ``selector``, ``notSelector``, ``serviceAccounts`` is set (a GlobalNetworkPolicy: no scope).
``notSelector`` is not scoped. A rule matches when every field does: ``protocol``,
``notProtocol``, ``ipVersion``, ``nets`` (one holds the address), ``notNets`` (none does), the
selectors, destination ``ports``/``notPorts``, source ``ports``/``notPorts``, ``domains`` and
``http``.

What the flows cannot tell, judged and stated:

* **Pod addresses** are not known per pod, so ``nets`` never hold a pod and ``notNets`` never
  exclude one (as the Kubernetes evaluator's ipBlocks).
* **Source ports** are aggregated away (a connection's source port is the client's ephemeral
  port). A source ``ports`` list matches when it covers the whole Linux ephemeral range
  (32768-60999), never when it is disjoint from it; ``notPorts`` the reverse. A list that covers
  part of the range, or names a port, cannot be judged and is refused.
* **HTTP** (``http.methods``, ``http.paths`` exact or prefix) is matched request by request
  where the flows carry L7 records (an edge is allowed when each of its requests is); on a
  connection without them it is judged at L4: the clause matches.
* **services** (a Service's endpoints; in a destination, on the ports they serve it on) are
  the endpoints the flows show reached through the Service (:mod:`.services`).
* **ipVersion** is the family of the connection's addresses (an external end's, else the
  family of the edge's pod addresses in the flows); unknown: the clause matches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ..policy.model import Action, Direction, PortSpec
from .calico_selector import All, And, Global, Has, Not, Or, Selector
from .evaluator import Cluster, Endpoint, Pod, _Check, dns_matches
from .services import ServiceMap

__all__ = [
    "EPHEMERAL_PORTS",
    "CalicoRule",
    "EntityMatch",
    "Flow",
    "NetworkSet",
    "endpoint_labels",
    "namespace_scope",
    "replace_all",
    "source_ports_match",
]

#: Linux's default ``net.ipv4.ip_local_port_range``: the source ports of client connections.
EPHEMERAL_PORTS: Final = (32768, 60999)
NAMESPACE_KEY: Final = "projectcalico.org/namespace"
ACCOUNT_KEY: Final = "projectcalico.org/serviceaccount"
NS_PREFIX: Final = "pcns."
SA_PREFIX: Final = "pcsa."
_NAME: Final = "projectcalico.org/name"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class NetworkSet:
    """A NetworkSet (``namespace`` set) or GlobalNetworkSet: its labels and nets."""

    namespace: str | None
    labels: Mapping[str, str]
    nets: tuple[Network, ...]

    def labels_in(self, cluster: Cluster) -> dict[str, str]:
        """The labels Calico matches selectors on (see the module docstring)."""
        if self.namespace is None:
            return dict(self.labels)
        out = dict(self.labels)
        out[NAMESPACE_KEY] = self.namespace
        namespace = cluster.namespaces.get(self.namespace)
        for key, value in (namespace.labels if namespace else {}).items():
            out[NS_PREFIX + key] = value
        out[NS_PREFIX + _NAME] = self.namespace
        return out


@dataclass(frozen=True)
class Flow:
    """What the flows tell about a connection beyond its endpoints and port."""

    request: tuple[str, str] | None = None  # (method, path) of one HTTP request
    family: int | None = None  # 4 or 6: the address family of the edge's pod addresses
    services: ServiceMap | None = None  # the Service endpoints the flows show


_LABELS: dict[int, tuple[Pod, Cluster, dict[str, str]]] = {}


def endpoint_labels(pod: Pod, cluster: Cluster) -> dict[str, str]:
    """The labels Calico gives the pod's workload endpoint (see the module docstring)."""
    found = _LABELS.get(id(pod))
    if found is not None and found[0] is pod and found[1] is cluster:
        return found[2]
    out = dict(pod.labels)
    out[NAMESPACE_KEY] = pod.namespace
    out["projectcalico.org/orchestrator"] = "k8s"
    namespace = cluster.namespaces.get(pod.namespace)
    for key, value in (namespace.labels if namespace else {}).items():
        out[NS_PREFIX + key] = value
    out[NS_PREFIX + _NAME] = pod.namespace
    account = pod.labels.get(ACCOUNT_KEY)
    if account is not None:
        out[SA_PREFIX + _NAME] = account
    if len(_LABELS) > 100_000:
        _LABELS.clear()
    _LABELS[id(pod)] = (pod, cluster, out)  # holding them keeps the ids unique
    return out


def namespace_scope(selector: Selector) -> Selector:
    """A ``namespaceSelector`` as Felix rewrites it: labels ``pcns.``-prefixed, ``all()``
    meaning "in some namespace", ``global()`` "in none"."""
    if isinstance(selector, All):
        return Has(NAMESPACE_KEY)
    if isinstance(selector, Global):
        return Not(Has(NAMESPACE_KEY))
    if isinstance(selector, Not):
        return Not(namespace_scope(selector.operand))
    if isinstance(selector, And):
        return And(tuple(namespace_scope(o) for o in selector.operands))
    if isinstance(selector, Or):
        return Or(tuple(namespace_scope(o) for o in selector.operands))
    return selector.prefixed(NS_PREFIX)


def replace_all(selector: Selector, replacement: Selector) -> Selector:
    """``selector`` with every ``all()`` replaced (Felix's textual ``strings.Replace`` of
    ``all()`` in a GlobalNetworkPolicy's combined selector)."""
    if isinstance(selector, All):
        return replacement
    if isinstance(selector, Not):
        return Not(replace_all(selector.operand, replacement))
    if isinstance(selector, And):
        return And(tuple(replace_all(o, replacement) for o in selector.operands))
    if isinstance(selector, Or):
        return Or(tuple(replace_all(o, replacement) for o in selector.operands))
    return selector


def _address(end: Pod | Endpoint) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = end.ip if end.ip else None
    return ipaddress.ip_address(text) if text else None


@dataclass(frozen=True)
class EntityMatch:
    """One side (``source`` or ``destination``) of a Calico rule, as Felix matches it."""

    selector: Selector | None = None
    not_selector: Selector | None = None
    nets: tuple[Network, ...] = ()
    not_nets: tuple[Network, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    not_ports: tuple[PortSpec, ...] = ()
    domains: tuple[str, ...] = ()
    sets: tuple[NetworkSet, ...] = field(default=(), repr=False)
    service: tuple[str, str] | None = None  # ``services``: (namespace, name)

    def _selected(self, selector: Selector, end: Pod | Endpoint, cluster: Cluster) -> bool:
        if isinstance(end, Pod):
            return selector.evaluate(endpoint_labels(end, cluster))
        ip = _address(end)
        return ip is not None and any(
            selector.evaluate(s.labels_in(cluster))
            for s in self.sets
            if any(ip.version == n.version and ip in n for n in s.nets)
        )

    def matches(self, end: Pod | Endpoint, cluster: Cluster) -> bool:
        """Whether ``end`` is one of the entity's endpoints (ports aside)."""
        ip = _address(end)
        if self.nets and (ip is None or not any(ip.version == n.version and ip in n
                                                for n in self.nets)):
            return False
        if self.not_nets and ip is not None and any(
            ip.version == n.version and ip in n for n in self.not_nets
        ):
            return False
        if self.selector is not None and not self._selected(self.selector, end, cluster):
            return False
        if self.not_selector is not None and self._selected(self.not_selector, end, cluster):
            return False
        if self.domains:
            names = end.dns_names if isinstance(end, Endpoint) else ()
            return any(dns_matches(d, n) for d in self.domains for n in names)
        return True


@dataclass(frozen=True)
class CalicoRule:
    """A Calico rule with every match field (see the module docstring)."""

    direction: Direction
    action: Action
    source: EntityMatch = field(default_factory=EntityMatch)
    destination: EntityMatch = field(default_factory=EntityMatch)
    protocol: str | None = None
    not_protocol: str | None = None
    ip_version: int | None = None
    source_ports_match: bool = True  # False: the source ports exclude every ephemeral port
    http_methods: tuple[str, ...] = ()
    http_paths: tuple[tuple[str, str], ...] = ()  # ("exact" | "prefix", path)
    has_http: bool = False

    def matches(self, check: _Check, flow: Flow | None = None) -> bool:
        """Whether the rule matches the connection ``check`` describes."""
        flow = flow or Flow()
        if not self.source_ports_match:
            return False
        if self.protocol is not None and self.protocol != check.protocol:
            return False
        if self.not_protocol is not None and self.not_protocol == check.protocol:
            return False
        if self.ip_version is not None:
            family = next(
                (a.version for a in (_address(check.src), _address(check.dst)) if a is not None),
                flow.family,
            )
            if family is not None and family != self.ip_version:
                return False
        ports = self.destination.ports
        if ports and not any(check._port_matches(p) for p in ports):
            return False
        if any(check._port_matches(p) for p in self.destination.not_ports):
            return False
        if not self.source.matches(check.src, check.cluster):
            return False
        if not self.destination.matches(check.dst, check.cluster):
            return False
        services = flow.services
        if self.source.service is not None and (
            services is None or not services.backs(*self.source.service, check.src)
        ):
            return False
        if self.destination.service is not None:
            # Felix's destination Service IP set holds each endpoint with its port
            served = None if services is None else services.ports(
                *self.destination.service, check.dst
            )
            if served is None or (check.protocol, check.port) not in served:
                return False
        if self.has_http and flow.request is not None:
            method, path = flow.request
            if self.http_methods and method.upper() not in self.http_methods:
                return False
            if self.http_paths and not any(
                path == value if kind == "exact" else path.startswith(value)
                for kind, value in self.http_paths
            ):
                return False
        return True


def source_ports_match(
    ports: Iterable[PortSpec], not_ports: Iterable[PortSpec]
) -> bool | str:
    """Whether source ``ports``/``notPorts`` match a client's ephemeral port: True, False, or
    why it cannot be told."""
    low, high = EPHEMERAL_PORTS

    def cover(specs: list[PortSpec]) -> str:
        """"all", "none" or "some" of the ephemeral range."""
        if any(s.name is not None for s in specs):
            return "named"
        spans = sorted(
            (s.port or 0, s.end_port or s.port or 65535) if s.port else (0, 65535) for s in specs
        )
        covered, reach = 0, low
        for start, end in spans:
            if end < low or start > high:
                continue
            covered += 1
            if start <= reach:
                reach = max(reach, end + 1)
        if reach > high:
            return "all"
        return "some" if covered else "none"

    result = True
    for specs, wanted in ((list(ports), True), (list(not_ports), False)):
        if not specs:
            continue
        found = cover(specs)
        if found == "named":
            return "a named source port cannot be resolved on a client's ephemeral port"
        if found == "some":
            return (
                f"source ports covering part of the ephemeral range {low}-{high} cannot be "
                "judged (the flows' edges do not keep source ports)"
            )
        hit = found == "all"
        result = result and (hit if wanted else not hit)
    return result
