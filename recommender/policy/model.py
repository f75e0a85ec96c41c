"""The dialect-neutral policy model: the contract between synthesis, writers and the evaluator.

All classes are frozen dataclasses whose tuple fields are kept sorted by the code that builds
them, so that equal policies compare equal and render to the same bytes.

A :class:`PolicySet` holds :class:`Policy` objects. A policy selects pods of one namespace by a
:class:`LabelSelector` and carries ingress and egress :class:`Rule` objects; a rule allows (or
denies, or passes) traffic from or to its :class:`Peer` objects on its :class:`PortSpec` objects.
Peers within a rule are OR-ed; in one peer, a namespace selector and a pod selector are AND-ed
(the Kubernetes NetworkPolicy meaning). An empty ``ports`` tuple means every port and protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = [
    "Action",
    "Direction",
    "Evidence",
    "HttpRule",
    "LabelSelector",
    "Peer",
    "Policy",
    "PolicySet",
    "PortSpec",
    "Rule",
]

Direction = Literal["ingress", "egress"]
Action = Literal["allow", "deny", "pass"]
PeerKind = Literal["pods", "cidr", "entity"]


@dataclass(frozen=True, order=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches everything.

    ``match_expressions`` holds ``(key, operator, values)`` with operator ``In``, ``NotIn``,
    ``Exists`` or ``DoesNotExist`` and values sorted.
    """

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, labels: dict[str, str] | None = None) -> LabelSelector:
        """A selector matching exactly these labels (sorted)."""
        return cls(tuple(sorted((labels or {}).items())))

    @property
    def is_empty(self) -> bool:
        """True for the selector that matches everything."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a pod or namespace with ``labels`` is selected."""
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        for key, op, values in self.match_expressions:
            present = key in labels
            if op == "In" and (not present or labels[key] not in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True, order=True)
class PortSpec:
    """A protocol with one port, a port range (``port``..``end_port``), or every port (None).

    ``name`` is a named port (a container port name, ``port`` then None): only the
    destination pod knows its number, so :meth:`contains` never matches it; the evaluator
    resolves it against the pod.
    """

    protocol: str
    port: int | None = None
    end_port: int | None = None
    name: str | None = None

    def contains(self, protocol: str, port: int | None) -> bool:
        """Whether ``protocol`` traffic to ``port`` falls in this spec (never if named)."""
        if protocol != self.protocol or self.name is not None:
            return False
        if self.port is None:
            return True
        if port is None:
            return False
        return self.port <= port <= (self.end_port or self.port)


@dataclass(frozen=True, order=True)
class HttpRule:
    """An observed HTTP request to a peer: method and path on one destination port.

    Only dialects with L7 rules (Cilium with ``--l7``) render these; ``path`` None means any
    path for the method (paths were too many to list).
    """

    protocol: str
    port: int
    method: str
    path: str | None = None


@dataclass(frozen=True, order=True)
class Peer:
    """One peer of a rule.

    ``kind`` is ``pods`` (``namespace_selector`` None means the policy's own namespace;
    ``pod_selector`` None means every pod of the selected namespaces), ``cidr`` (``cidr`` with
    ``except_``), or ``entity`` (a Cilium-style entity such as ``kube-apiserver``, ``host``,
    ``remote-node`` or ``world``; writers without entities use ``cidr`` peers instead).
    ``note`` explains a peer that needs a human eye (node addresses, say) and is not rendered
    into the policy itself.

    The remaining fields are optional evidence for richer dialects; they never change which
    peer this is (they take no part in comparisons) and Kubernetes ignores them:
    ``dns_names`` the DNS names observed for a ``cidr`` peer's addresses (Calico domains,
    Cilium toFQDNs), ``http`` the observed HTTP requests (Cilium L7 rules), ``group`` the name
    of the address group (inventory entry) a ``cidr`` peer stands for, ``service_account`` the
    one service account of a ``pods`` peer's workload, ``workload`` that workload's name, and
    ``entities`` what a ``cidr`` peer's addresses were observed as (``host``, ``remote-node``,
    ``kube-apiserver``, ``world``): Cilium matches the first three by entity only;
    ``mesh_account`` the workload's service account for Istio principals, also known when some
    of its records carried no account label (``service_account`` then stays None).
    """

    kind: PeerKind
    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None
    cidr: str | None = None
    except_: tuple[str, ...] = ()
    entity: str | None = None
    note: str = field(default="", compare=False)
    dns_names: tuple[str, ...] = field(default=(), compare=False)
    http: tuple[HttpRule, ...] = field(default=(), compare=False)
    group: str | None = field(default=None, compare=False)
    service_account: str | None = field(default=None, compare=False)
    workload: str | None = field(default=None, compare=False)
    entities: tuple[str, ...] = field(default=(), compare=False)
    mesh_account: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Evidence:
    """What a rule rests on: observed connections and when."""

    connections: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    windows: int = 0
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """Traffic from (ingress) or to (egress) ``peers`` on ``ports`` gets ``action``."""

    direction: Direction
    peers: tuple[Peer, ...]
    ports: tuple[PortSpec, ...] = ()
    action: Action = "allow"
    evidence: Evidence = field(default_factory=Evidence, compare=False)
    comment: str = field(default="", compare=False)


@dataclass(frozen=True)
class Policy:
    """One namespaced policy selecting pods by ``selector``.

    ``policy_types`` lists the directions the policy isolates (a policy with no ingress rules
    but ``ingress`` in its types denies all ingress to its pods). ``precedence`` and ``tier``
    are for dialects that order policies (Calico); Kubernetes ignores them.
    ``service_account`` is the one service account of the selected workload, when known
    (dialects may select by it on request). A host policy (in :attr:`PolicySet.host_policies`)
    has ``namespace`` ``""`` and a ``selector`` over host (node) labels.
    """

    name: str
    namespace: str
    selector: LabelSelector
    policy_types: tuple[Direction, ...] = ("ingress", "egress")
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    precedence: int | None = None
    tier: str | None = None
    description: str = field(default="", compare=False)
    service_account: str | None = field(default=None, compare=False)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Ingress then egress rules."""
        return self.ingress + self.egress


@dataclass(frozen=True)
class PolicySet:
    """Every policy of a recommendation, sorted by namespace and name.

    ``host_policies`` are cluster-scoped policies for hosts (nodes, Calico host endpoints),
    sorted by name; only dialects with host policies render them (Calico GlobalNetworkPolicy,
    Cilium CiliumClusterwideNetworkPolicy), and the Kubernetes evaluator ignores them.
    """

    policies: tuple[Policy, ...] = ()
    host_policies: tuple[Policy, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.policies, key=lambda p: (p.namespace, p.name)))
        object.__setattr__(self, "policies", ordered)
        hosts = tuple(sorted(self.host_policies, key=lambda p: p.name))
        object.__setattr__(self, "host_policies", hosts)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The namespaces that have at least one policy, sorted."""
        return tuple(sorted({p.namespace for p in self.policies}))

    def in_namespace(self, namespace: str) -> tuple[Policy, ...]:
        """The policies of one namespace."""
        return tuple(p for p in self.policies if p.namespace == namespace)

    def __len__(self) -> int:
        return len(self.policies)
