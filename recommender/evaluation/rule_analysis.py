"""Rule hygiene for Kubernetes NetworkPolicy sets: redundant, shadowed and overly broad rules.

Two pure functions look at the allow rules of a :class:`~recommender.policy.model.PolicySet`
with Kubernetes semantics (``docs/evaluate.md``, *Rule findings*):

* :func:`find_redundant_rules`: a rule is **redundant** when every (peer, port) it allows is
  also allowed by other rules of policies that select (at least) the same pods in the same
  direction, in the same namespace. Containment is decided structurally, never by guessing:

  - a policy's selector S2 covers S1 when S2's ``matchLabels`` are a subset of S1's and its
    ``matchExpressions`` a subset of S1's (in particular none);
  - a ``pods`` peer covers another when its namespace selector and its pod selector cover the
    other's (``namespaceSelector`` None is the policy's namespace, i.e.
    ``kubernetes.io/metadata.name=<namespace>``; ``podSelector`` None is every pod);
  - a ``cidr`` peer covers another when the other's block lies inside it and each of its
    ``except`` blocks that overlaps the other lies inside one of the other's ``except``;
  - a port spec covers another of the same protocol when its range holds the other's
    (no port: every port; a named port is covered by the same name or by every port);
    a rule without ports allows every port of TCP, UDP and SCTP, a rule without peers every
    peer.

  Rules are checked last first against the rules not already found redundant, so two duplicates give
  one finding (the later rule) and every finding can be deleted together. With a replay
  (:class:`~recommender.evaluation.replay.Coverage`), a redundant rule that no observed edge matched
  is **shadowed**: deleting it changes nothing that was observed.
* :func:`find_broad_rules`: a rule is **broad** when it allows much more than a
  least-privilege rule would: no peers, a ``pods`` peer with an empty (or absent) pod selector
  or a namespace selector matching every namespace, a CIDR of /16 or shorter (IPv4) or /48 or
  shorter (IPv6), no ports (every port) or a range wider than 100 ports. With a replay, the
  rule's **utilisation** is also measured (Cisco's "broad" rule idea): the (peer endpoint x
  port) pairs it allows, counting the observed endpoints its peers match (workloads, and
  external addresses seen in the evidence) times its ports, against the pairs that carried
  traffic it matched; a rule used below ``min_utilisation`` is broad too.

Only ``allow`` rules in a direction their policy isolates are considered; ``entity`` peers
neither cover nor are covered.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, Protocol

from ..policy.model import Direction, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
from .evaluator import NAMESPACE_NAME_LABEL, Cluster, Pod


class Coverage(Protocol):
    """What these analyses read of a replay (:class:`recommender.evaluation.replay.Coverage`
    has it; a protocol, so that the replay, which calls them, is not imported here)."""

    @property
    def unused_rules(self) -> tuple[dict[str, Any], ...]: ...

    @property
    def rule_traffic(
        self,
    ) -> Mapping[tuple[str, str, Direction, int], frozenset[tuple[str, str, int | None]]]: ...

    @property
    def cluster(self) -> Cluster | None: ...

    @property
    def external_addresses(self) -> frozenset[str]: ...

__all__ = [
    "BROAD_IPV4_PREFIX",
    "BROAD_IPV6_PREFIX",
    "BROAD_PORT_RANGE",
    "RuleFinding",
    "find_broad_rules",
    "find_redundant_rules",
    "rule_label",
]

FindingKind = Literal["redundant", "shadowed", "broad"]
RuleKey = tuple[str, str, Direction, int]

#: IPv4 CIDR peers with this prefix length or shorter are broad.
BROAD_IPV4_PREFIX: Final = 16
#: IPv6 CIDR peers with this prefix length or shorter are broad.
BROAD_IPV6_PREFIX: Final = 48
#: Port ranges wider than this many ports are broad.
BROAD_PORT_RANGE: Final = 100
#: Ports of one protocol (1..65535).
_ALL_PORTS: Final = 65535
#: The protocols Kubernetes NetworkPolicy matches: a rule without ports allows all of them.
_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
_DIRECTIONS: Final[tuple[Direction, ...]] = ("ingress", "egress")


@dataclass(frozen=True)
class RuleFinding:
    """One rule that deserves a look.

    Parameters
    ----------
    policy : str
        ``namespace/name`` of the rule's policy.
    direction : {"ingress", "egress"}
        The rule's direction.
    rule_index : int
        Its index among the policy's rules of that direction.
    kind : {"redundant", "shadowed", "broad"}
        ``redundant``: other rules allow everything it allows; ``shadowed``: redundant and
        matched by no observed edge of the replay; ``broad``: allows much more than needed.
    reason : str
        Why, in words.
    covered_by : str or None
        For redundant and shadowed rules, the rules that allow what it allows
        (``ns/name direction rule i``, comma-separated); None for broad rules.
    used, allowed : int or None
        For broad rules judged against a replay: (peer endpoint x port) pairs that carried
        traffic the rule matched, and the pairs it allows (observed endpoints its peers match x
        its ports); None without a replay.
    """

    policy: str
    direction: Direction
    rule_index: int
    kind: FindingKind
    reason: str
    covered_by: str | None = None
    used: int | None = None
    allowed: int | None = None

    @property
    def utilisation(self) -> float | None:
        """``used / allowed`` (None without a replay or when nothing observed is allowed)."""
        if self.used is None or not self.allowed:
            return None
        return self.used / self.allowed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``utilisation`` included)."""
        return {
            "allowed": self.allowed,
            "covered_by": self.covered_by,
            "direction": self.direction,
            "kind": self.kind,
            "policy": self.policy,
            "reason": self.reason,
            "rule": self.rule_index,
            "used": self.used,
            "utilisation": self.utilisation,
        }


def rule_label(key: RuleKey) -> str:
    """``ns/name direction rule i`` for a rule key ``(namespace, name, direction, index)``."""
    return f"{key[0]}/{key[1]} {key[2]} rule {key[3]}"


# --------------------------------------------------------------------------- shared helpers


class _Entry(NamedTuple):
    """One allow rule (a named tuple: one per rule of the policy set, made fast)."""

    key: RuleKey
    policy: Policy
    rule: Rule


#: The last policy set's entries (a weak reference to it, and the list): the replay asks for
#: the redundant and then the broad rules of one policy set.
_LAST_ENTRIES: list[Any] = [None, []]


def _entries(policy_set: PolicySet) -> list[_Entry]:
    """Every allow rule in a direction its policy isolates, in canonical order (read-only:
    shared by consecutive calls on the same policy set)."""
    ref, known = _LAST_ENTRIES
    if ref is not None and ref() is policy_set:
        return known  # type: ignore[no-any-return]
    out = _build_entries(policy_set)
    _LAST_ENTRIES[:] = [weakref.ref(policy_set), out]
    return out


def _build_entries(policy_set: PolicySet) -> list[_Entry]:
    out = []
    for policy in policy_set.policies:
        for direction in _DIRECTIONS:
            if direction not in policy.policy_types:
                continue
            rules = policy.ingress if direction == "ingress" else policy.egress
            for index, rule in enumerate(rules):
                if rule.action == "allow":
                    key = (policy.namespace, policy.name, direction, index)
                    out.append(_Entry(key, policy, rule))
    return out


def _selector_covers(broad: LabelSelector, narrow: LabelSelector) -> bool:
    """Whether every labels map ``narrow`` selects is selected by ``broad`` (structurally)."""
    if broad is narrow:
        return True
    return set(broad.match_labels) <= set(narrow.match_labels) and set(
        broad.match_expressions
    ) <= set(narrow.match_expressions)


def _selector_text(selector: LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in selector.match_labels]
    parts += [f"{k} {op} ({','.join(values)})" for k, op, values in selector.match_expressions]
    return ",".join(parts) or "{}"


def _namespace_selector(peer: Peer, namespace: str) -> LabelSelector:
    """The peer's namespace selector, None made explicit (the policy's own namespace)."""
    if peer.namespace_selector is None:
        return _own_namespace(namespace)
    return peer.namespace_selector


@functools.lru_cache(maxsize=4096)
def _own_namespace(namespace: str) -> LabelSelector:
    """``kubernetes.io/metadata.name=<namespace>`` (immutable: one per namespace)."""
    return LabelSelector.of({NAMESPACE_NAME_LABEL: namespace})


@functools.lru_cache(maxsize=4096)
def _network(text: str | None) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text or "", strict=False)
    except ValueError:
        return None


def _ports(rule: Rule) -> tuple[PortSpec, ...]:
    """The rule's port specs; no ports = every port of each NetworkPolicy protocol."""
    return rule.ports or tuple(PortSpec(p) for p in _PROTOCOLS)


# --------------------------------------------------------------------------- redundancy


def _peer_covers(broad: Peer, broad_ns: str, narrow: Peer, narrow_ns: str) -> bool:
    if broad.kind != narrow.kind:
        return False
    if broad.kind == "pods":
        return _selector_covers(
            _namespace_selector(broad, broad_ns), _namespace_selector(narrow, narrow_ns)
        ) and _selector_covers(
            broad.pod_selector or LabelSelector(), narrow.pod_selector or LabelSelector()
        )
    if broad.kind != "cidr":
        return False  # entities: not Kubernetes NetworkPolicy
    outer, inner = _network(broad.cidr), _network(narrow.cidr)
    if outer is None or inner is None or outer.version != inner.version:
        return False
    if not inner.subnet_of(outer):  # type: ignore[arg-type]
        return False
    inner_excepts = [n for n in map(_network, narrow.except_) if n and n.version == inner.version]
    for text in broad.except_:
        hole = _network(text)
        if hole is None:
            return False
        if hole.version != inner.version or not hole.overlaps(inner):
            continue
        if not any(hole.subnet_of(e) for e in inner_excepts):  # type: ignore[arg-type]
            return False
    return True


def _port_covers(broad: PortSpec, narrow: PortSpec) -> bool:
    if broad.protocol != narrow.protocol:
        return False
    if broad.name is None and broad.port is None:
        return True
    if broad.name is not None or narrow.name is not None:
        return broad.name is not None and broad.name == narrow.name
    if narrow.port is None or broad.port is None:
        return False
    return broad.port <= narrow.port and (narrow.end_port or narrow.port) <= (
        broad.end_port or broad.port
    )


def _pair_covered(peer: Peer | None, port: PortSpec, narrow: _Entry, broad: _Entry) -> bool:
    """Whether ``broad``'s rule allows the (peer, port) of ``narrow``'s rule (None: every peer)."""
    if broad.rule.peers:
        if peer is None:
            return False
        if not any(
            _peer_covers(p, broad.policy.namespace, peer, narrow.policy.namespace)
            for p in broad.rule.peers
        ):
            return False
    return any(_port_covers(p, port) for p in _ports(broad.rule))


def _coverers(entry: _Entry, candidates: Sequence[_Entry]) -> list[RuleKey] | None:
    """The candidates that together allow everything ``entry`` allows, or None."""
    used: list[RuleKey] = []
    peers: tuple[Peer | None, ...] = entry.rule.peers or (None,)
    for peer in peers:
        for port in _ports(entry.rule):
            found = next((c for c in candidates if _pair_covered(peer, port, entry, c)), None)
            if found is None:
                return None
            if found.key not in used:
                used.append(found.key)
    return used


class _Candidates:
    """The rules of policies selecting at least a rule's pods, in its direction and namespace.

    Rules are grouped by (namespace, direction) and policy selector; each selector is filed
    under one of its requirements (a ``matchLabels`` pair or a ``matchExpressions`` term), so
    the selectors covering a given one (their requirements a subset of its own) are found by
    looking up its requirements only: no rule is compared with rules that cannot cover it.
    """

    def __init__(self, entries: Sequence[_Entry]) -> None:
        self._order = {e.key: i for i, e in enumerate(entries)}
        self._by_selector: dict[tuple[str, str, LabelSelector], list[_Entry]] = {}
        self._filed: dict[tuple[str, str, object], list[LabelSelector]] = {}
        for entry in entries:
            ns, direction = entry.key[0], entry.key[2]
            selector = entry.policy.selector
            group = self._by_selector.setdefault((ns, direction, selector), [])
            if not group:
                first = min(_requirements(selector), default=None)
                self._filed.setdefault((ns, direction, first), []).append(selector)
            group.append(entry)
        self._covering: dict[tuple[str, str, LabelSelector], list[LabelSelector]] = {}

    def of(self, entry: _Entry, removed: set[RuleKey]) -> list[_Entry]:
        """The candidates for ``entry`` among the rules not ``removed``, in canonical order."""
        ns, direction = entry.key[0], entry.key[2]
        selector = entry.policy.selector
        key = (ns, direction, selector)
        covering = self._covering.get(key)
        if covering is None:
            covering = [
                s
                for item in (None, *_requirements(selector))
                for s in self._filed.get((ns, direction, item), ())
                if _selector_covers(s, selector)
            ]
            self._covering[key] = covering
        out = [
            c
            for s in covering
            for c in self._by_selector[(ns, direction, s)]
            if c.key != entry.key and c.key not in removed
        ]
        if len(covering) > 1:
            out.sort(key=lambda c: self._order[c.key])
        return out


def _requirements(selector: LabelSelector) -> list[tuple[object, ...]]:
    """A selector's requirements, comparable: ``(0, key, value)`` and ``(1, key, op, values)``."""
    return [(0, *pair) for pair in set(selector.match_labels)] + [
        (1, *term) for term in set(selector.match_expressions)
    ]


def _unused_keys(coverage: Coverage) -> set[tuple[str, str, int]]:
    return {(r["policy"], r["direction"], int(r["rule"])) for r in coverage.unused_rules}


#: The last policy set's redundant rules (a weak reference to it, and the list): a replay's
#: coverage changes only which of them are shadowed (the self-check replays twice).
_LAST_REDUNDANT: list[Any] = [None, []]


def _redundant(policy_set: PolicySet) -> list[tuple[RuleKey, str]]:
    """Each redundant rule's key and the kept rules covering it (``covered_by``), in
    canonical order; remembered for the last policy set (read-only)."""
    ref, known = _LAST_REDUNDANT
    if ref is not None and ref() is policy_set:
        return known  # type: ignore[no-any-return]
    entries = _entries(policy_set)
    candidates = _Candidates(entries)
    removed: set[RuleKey] = set()
    found: dict[RuleKey, list[RuleKey]] = {}
    for entry in reversed(entries):
        coverers = _coverers(entry, candidates.of(entry, removed))
        if coverers is not None:
            found[entry.key] = coverers
            removed.add(entry.key)
    out = []
    for entry in entries:
        if entry.key in found:
            # Name rules that stay: containment is transitive, so the kept rules cover it too.
            final = _coverers(entry, candidates.of(entry, removed)) or found[entry.key]
            out.append((entry.key, ", ".join(rule_label(k) for k in final)))
    _LAST_REDUNDANT[:] = [weakref.ref(policy_set), out]
    return out


def find_redundant_rules(
    policy_set: PolicySet, coverage: Coverage | None = None
) -> list[RuleFinding]:
    """Rules whose every (peer, port) other rules also allow (see the module docstring).

    Parameters
    ----------
    policy_set : PolicySet
        Kubernetes NetworkPolicies; only allow rules are considered.
    coverage : Coverage, optional
        A replay of ``policy_set`` (:func:`~recommender.evaluation.replay.replay`): a redundant rule
        it lists as unused is reported as ``shadowed``.

    Returns
    -------
    list of RuleFinding
        Kind ``redundant`` or ``shadowed``, ``covered_by`` naming rules that are kept, in
        policy order (namespace, name), ingress before egress, by rule index. All of them
        can be deleted at once without changing what the policy set allows.

    Examples
    --------
    >>> from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
    >>> web = Peer("pods", pod_selector=LabelSelector.of({"app": "web"}))
    >>> rule = Rule("ingress", (web,), (PortSpec("TCP", 8080),))
    >>> api = Policy("api", "shop", LabelSelector.of({"app": "api"}), ("ingress",), (rule, rule))
    >>> [(f.kind, f.rule_index, f.covered_by) for f in find_redundant_rules(PolicySet((api,)))]
    [('redundant', 1, 'shop/api ingress rule 0')]
    """
    unused = _unused_keys(coverage) if coverage is not None else set()
    out = []
    for key, covered_by in _redundant(policy_set):
        policy = f"{key[0]}/{key[1]}"
        shadowed = (policy, key[2], key[3]) in unused
        reason = f"everything it allows is also allowed by {covered_by}"
        if shadowed:
            reason += "; no observed traffic matched it, so deleting it changes nothing observed"
        out.append(
            RuleFinding(
                policy,
                key[2],
                key[3],
                "shadowed" if shadowed else "redundant",
                reason,
                covered_by,
            )
        )
    return out


# --------------------------------------------------------------------------- breadth


def _peer_breadth(peer: Peer, namespace: str) -> str | None:
    """Why a peer is broad, or None."""
    if peer.kind == "pods":
        every_pod = peer.pod_selector is None or peer.pod_selector.is_empty
        every_ns = peer.namespace_selector is not None and peer.namespace_selector.is_empty
        if every_ns:
            pods = "every pod" if every_pod else f"pods {_selector_text(peer.pod_selector)}"  # type: ignore[arg-type]
            return f"{pods} in every namespace"
        if every_pod:
            where = (
                f"namespace {namespace}"
                if peer.namespace_selector is None
                else f"the namespaces {_selector_text(peer.namespace_selector)}"
            )
            return f"every pod of {where}"
        return None
    if peer.kind == "cidr":
        network = _network(peer.cidr)
        if network is None:
            return None
        limit = BROAD_IPV4_PREFIX if network.version == 4 else BROAD_IPV6_PREFIX
        if network.prefixlen <= limit:
            excepts = f" except {', '.join(peer.except_)}" if peer.except_ else ""
            return (
                f"CIDR {network}{excepts} (/{network.prefixlen}: "
                f"{network.num_addresses:,} addresses)"
            )
    return None


def _port_breadth(rule: Rule) -> list[str]:
    if not rule.ports:
        return ["every port of every protocol (no ports)"]
    out = []
    for spec in rule.ports:
        if spec.name is not None:
            continue
        if spec.port is None:
            out.append(f"every {spec.protocol} port")
        elif spec.end_port is not None and spec.end_port - spec.port + 1 > BROAD_PORT_RANGE:
            out.append(
                f"{spec.protocol} ports {spec.port}-{spec.end_port} "
                f"({spec.end_port - spec.port + 1:,} ports)"
            )
    return out


def _port_units(rule: Rule) -> int:
    """How many (protocol, port) values the rule allows (named ports count one each)."""
    total = 0
    for protocol in _PROTOCOLS:
        spans = sorted(
            (s.port or 1, (s.end_port or s.port) if s.port is not None else _ALL_PORTS)
            for s in _ports(rule)
            if s.protocol == protocol and s.name is None
        )
        end = 0
        for low, high in spans:
            low = max(low, end + 1)
            if high >= low:
                total += high - low + 1
                end = high
    return total + len({(s.protocol, s.name) for s in rule.ports if s.name is not None})


class _PeerSpace:
    """The observed endpoints a rule's peers match: workload keys and external addresses.

    Pods are indexed by namespace and by (namespace, label key, value); a ``pods`` peer looks
    at the namespaces its namespace selector matches and, in each, at the pods carrying its
    first ``matchLabels`` pair only. External addresses are sorted by value, so a CIDR peer
    bisects to its block. Each distinct peer is resolved once.
    """

    def __init__(self, cluster: Cluster, external: Iterable[str]) -> None:
        self._every: frozenset[str] | None = None
        self._pods = list(cluster.pods)
        self._external = list(external)
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._by_ns: dict[str, list[Pod]] = {}
        self._by_pair: dict[tuple[str, str, str], list[Pod]] = {}
        for pod in self._pods:
            if pod.namespace not in self._ns_labels:
                namespace = cluster.namespaces.get(pod.namespace)
                labels = dict(namespace.labels) if namespace is not None else {}
                labels.setdefault(NAMESPACE_NAME_LABEL, pod.namespace)
                self._ns_labels[pod.namespace] = labels
            self._by_ns.setdefault(pod.namespace, []).append(pod)
            for key, value in pod.labels.items():
                self._by_pair.setdefault((pod.namespace, key, value), []).append(pod)
        by_version: dict[int, list[tuple[int, str]]] = {}
        for address in self._external:
            ip = ipaddress.ip_address(address)
            by_version.setdefault(ip.version, []).append((int(ip), address))
        self._addresses = {v: sorted(items) for v, items in by_version.items()}
        self._values = {v: [i for i, _ in items] for v, items in self._addresses.items()}
        self._cache: dict[tuple[object, ...], frozenset[str]] = {}
        self._by_peer: dict[tuple[int, str], tuple[Peer, frozenset[str]]] = {}
        self._own: dict[str, LabelSelector] = {}
        self._ns_cache: dict[LabelSelector, list[str]] = {}
        self._ns_by_name: dict[str, list[str]] = {}
        for ns, labels in self._ns_labels.items():
            self._ns_by_name.setdefault(labels[NAMESPACE_NAME_LABEL], []).append(ns)

    def of(self, entry: _Entry) -> frozenset[str]:
        """The endpoints ``entry``'s rule allows (every endpoint when it has no peers):
        shared, read-only."""
        if not entry.rule.peers:
            if self._every is None:
                self._every = frozenset(p.key for p in self._pods) | set(self._external)
            return self._every
        if len(entry.rule.peers) == 1:
            return self._peer(entry.rule.peers[0], entry.policy.namespace)
        out: set[str] = set()
        for peer in entry.rule.peers:
            out |= self._peer(peer, entry.policy.namespace)
        return frozenset(out)

    def _peer(self, peer: Peer, namespace: str) -> frozenset[str]:
        """One peer's endpoints, remembered per peer object (and namespace: a ``pods`` peer
        without a namespace selector is its policy's namespace)."""
        key = (id(peer), namespace)
        hit = self._by_peer.get(key)
        if hit is not None and hit[0] is peer:
            return hit[1]
        found: frozenset[str] = frozenset()
        if peer.kind == "pods":
            ns_selector = self._own.get(namespace) if peer.namespace_selector is None else None
            if ns_selector is None:
                ns_selector = _namespace_selector(peer, namespace)
                if peer.namespace_selector is None:
                    self._own[namespace] = ns_selector
            pod_selector = peer.pod_selector
            # Keyed by the selectors' fields (tuples hash in C, the dataclasses in Python).
            content = (
                "pods",
                ns_selector.match_labels,
                ns_selector.match_expressions,
                None if pod_selector is None else pod_selector.match_labels,
                None if pod_selector is None else pod_selector.match_expressions,
            )
            known = self._cache.get(content)
            if known is None:
                known = self._cache[content] = frozenset(
                    self._pods_of(("pods", ns_selector, pod_selector))
                )
            found = known
        elif peer.kind == "cidr":
            found = self._cached(("cidr", peer.cidr, peer.except_), self._cidr_of)
        self._by_peer[key] = (peer, found)
        return found

    def _cached(
        self, key: tuple[object, ...], resolve: Callable[[tuple[object, ...]], Iterable[str]]
    ) -> frozenset[str]:
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = frozenset(resolve(key))
        return found

    def _pods_of(self, key: tuple[object, ...]) -> Iterable[str]:
        ns_selector, pod_selector = key[1], key[2]
        assert isinstance(ns_selector, LabelSelector)
        assert pod_selector is None or isinstance(pod_selector, LabelSelector)
        for ns in self._namespaces(ns_selector):
            if pod_selector is None:
                yield from (p.key for p in self._by_ns[ns])
                continue
            pool = (
                self._by_pair.get((ns, *pod_selector.match_labels[0]), [])
                if pod_selector.match_labels
                else self._by_ns[ns]
            )
            if len(pod_selector.match_labels) == 1 and not pod_selector.match_expressions:
                yield from (p.key for p in pool)  # the pool is exactly the pods it selects
            else:
                yield from (p.key for p in pool if pod_selector.matches(p.labels))

    def _namespaces(self, selector: LabelSelector) -> list[str]:
        """The namespaces (with pods) ``selector`` matches; by name when it names one."""
        found = self._ns_cache.get(selector)
        if found is None:
            named = dict(selector.match_labels).get(NAMESPACE_NAME_LABEL)
            pool = self._ns_by_name.get(named, []) if named is not None else self._ns_labels
            found = [ns for ns in pool if selector.matches(self._ns_labels[ns])]
            self._ns_cache[selector] = found
        return found

    def _cidr_of(self, key: tuple[object, ...]) -> Iterable[str]:
        cidr, excepts = key[1], key[2]
        assert cidr is None or isinstance(cidr, str)
        assert isinstance(excepts, tuple)
        network = _network(cidr)
        if network is None:
            return
        holes = [n for n in map(_network, excepts) if n is not None]
        values = self._values.get(network.version, [])
        items = self._addresses.get(network.version, [])
        low = bisect.bisect_left(values, int(network.network_address))
        high = bisect.bisect_right(values, int(network.broadcast_address))
        for _, address in items[low:high]:
            ip = ipaddress.ip_address(address)
            if not any(ip.version == h.version and ip in h for h in holes):
                yield address


def find_broad_rules(
    policy_set: PolicySet,
    coverage: Coverage | None = None,
    *,
    min_utilisation: float = 0.5,
) -> list[RuleFinding]:
    """Rules that allow much more than least privilege needs (see the module docstring).

    Parameters
    ----------
    policy_set : PolicySet
        Kubernetes NetworkPolicies; only allow rules are considered.
    coverage : Coverage, optional
        The replay of ``policy_set`` on observed flows
        (:func:`~recommender.evaluation.replay.replay`): adds each rule's utilisation, and makes a
        rule whose traffic used less than ``min_utilisation`` of its (peer endpoint x port) pairs
        broad. Unused rules get no utilisation finding (they are listed as unused).
    min_utilisation : float, default 0.5
        The utilisation below which a used rule is broad.

    Returns
    -------
    list of RuleFinding
        Kind ``broad``, one per rule with every reason joined by ``"; "``, in policy order
        (namespace, name), ingress before egress, by rule index; ``used`` and ``allowed``
        filled with a replay.

    Examples
    --------
    >>> from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, Rule
    >>> everyone = Rule("ingress", (Peer("cidr", cidr="10.0.0.0/8"),))
    >>> api = Policy("api", "shop", LabelSelector.of({"app": "api"}), ("ingress",), (everyone,))
    >>> [f.reason for f in find_broad_rules(PolicySet((api,)))]
    ['CIDR 10.0.0.0/8 (/8: 16,777,216 addresses); every port of every protocol (no ports)']
    """
    traffic: Mapping[RuleKey, frozenset[tuple[str, str, int | None]]] = (
        coverage.rule_traffic if coverage is not None else {}
    )
    cluster = coverage.cluster if coverage is not None else None
    external = sorted(coverage.external_addresses) if coverage is not None else []
    unused = _unused_keys(coverage) if coverage is not None else set()
    space = _PeerSpace(cluster, external) if cluster is not None else None
    units_of: dict[tuple[PortSpec, ...], int] = {}
    out = []
    for entry in _entries(policy_set):
        namespace, name, direction, index = entry.key
        reasons = []
        if not entry.rule.peers:
            reasons.append(
                "every " + ("source" if direction == "ingress" else "destination") + " (no peers)"
            )
        for peer in entry.rule.peers:
            why = _peer_breadth(peer, namespace)
            if why and why not in reasons:
                reasons.append(why)
        reasons += _port_breadth(entry.rule)
        used: int | None = None
        allowed: int | None = None
        if coverage is not None and space is not None:
            endpoints = space.of(entry)
            used_pairs = {t for t in traffic.get(entry.key, frozenset()) if t[0] in endpoints}
            units = units_of.get(entry.rule.ports, -1)
            if units < 0:
                units = units_of[entry.rule.ports] = _port_units(entry.rule)
            allowed = len(endpoints) * units
            used = min(len(used_pairs), allowed)
            if (
                used
                and allowed
                and used / allowed < min_utilisation
                and (f"{namespace}/{name}", direction, index) not in unused
            ):
                reasons.append(
                    f"utilisation {used:,}/{allowed:,}: {used:,} of the {allowed:,} "
                    f"(peer x port) pairs it allows ({len(endpoints):,} observed peers x "
                    f"{units:,} ports) carried traffic"
                )
        if reasons:
            out.append(
                RuleFinding(
                    f"{namespace}/{name}",
                    direction,
                    index,
                    "broad",
                    "; ".join(reasons),
                    None,
                    used,
                    allowed,
                )
            )
    return out
