"""TEST-ONLY REFERENCE: the all-pairs rule analysis as it was before issue 22 (kept verbatim to
check the indexed version against; never imported by the package).

Rule hygiene for Kubernetes NetworkPolicy sets: redundant, shadowed and overly broad rules.

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

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from recommender.evaluation.evaluator import NAMESPACE_NAME_LABEL, Cluster, Pod
from recommender.policy.model import (
    Direction,
    LabelSelector,
    Peer,
    Policy,
    PolicySet,
    PortSpec,
    Rule,
)


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


@dataclass(frozen=True)
class _Entry:
    key: RuleKey
    policy: Policy
    rule: Rule


def _entries(policy_set: PolicySet) -> list[_Entry]:
    """Every allow rule in a direction its policy isolates, in canonical order."""
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
        return LabelSelector.of({NAMESPACE_NAME_LABEL: namespace})
    return peer.namespace_selector


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


def _candidates(entry: _Entry, pool: Iterable[_Entry]) -> list[_Entry]:
    """Rules of policies selecting at least ``entry``'s pods in its direction and namespace."""
    return [
        c
        for c in pool
        if c.key != entry.key
        and c.key[2] == entry.key[2]
        and c.policy.namespace == entry.policy.namespace
        and _selector_covers(c.policy.selector, entry.policy.selector)
    ]


def _unused_keys(coverage: Coverage) -> set[tuple[str, str, int]]:
    return {(r["policy"], r["direction"], int(r["rule"])) for r in coverage.unused_rules}


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
    entries = _entries(policy_set)
    kept = list(entries)
    found: dict[RuleKey, list[RuleKey]] = {}
    for entry in reversed(entries):
        coverers = _coverers(entry, _candidates(entry, kept))
        if coverers is not None:
            found[entry.key] = coverers
            kept.remove(entry)
    unused = _unused_keys(coverage) if coverage is not None else set()
    out = []
    for entry in entries:
        key = entry.key
        if key not in found:
            continue
        # Name rules that stay: containment is transitive, so the kept rules cover it too.
        final = _coverers(entry, _candidates(entry, kept)) or found[key]
        covered_by = ", ".join(rule_label(k) for k in final)
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
        pods = "every pod" if every_pod else f"pods {_selector_text(peer.pod_selector)}"  # type: ignore[arg-type]
        if every_ns:
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


def _peer_space(entry: _Entry, cluster: Cluster, external: Iterable[str]) -> set[str]:
    """The observed endpoints the rule's peers match: workload keys and external addresses."""
    peers = entry.rule.peers
    pods: list[Pod] = list(cluster.pods)
    if not peers:
        return {p.key for p in pods} | set(external)
    out: set[str] = set()
    for peer in peers:
        if peer.kind == "pods":
            ns_selector = _namespace_selector(peer, entry.policy.namespace)
            for pod in pods:
                namespace = cluster.namespaces.get(pod.namespace)
                labels = dict(namespace.labels) if namespace is not None else {}
                labels.setdefault(NAMESPACE_NAME_LABEL, pod.namespace)
                if ns_selector.matches(labels) and (
                    peer.pod_selector is None or peer.pod_selector.matches(dict(pod.labels))
                ):
                    out.add(pod.key)
        elif peer.kind == "cidr":
            network = _network(peer.cidr)
            holes = [n for n in map(_network, peer.except_) if n is not None]
            if network is None:
                continue
            for address in external:
                ip = ipaddress.ip_address(address)
                if (
                    ip.version == network.version
                    and ip in network
                    and not any(ip.version == h.version and ip in h for h in holes)
                ):
                    out.add(address)
    return out


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
        if coverage is not None and cluster is not None:
            endpoints = _peer_space(entry, cluster, external)
            used_pairs = {t for t in traffic.get(entry.key, frozenset()) if t[0] in endpoints}
            allowed = len(endpoints) * _port_units(entry.rule)
            used = min(len(used_pairs), allowed)
            policy_key = (f"{namespace}/{name}", direction, index)
            if used and allowed and used / allowed < min_utilisation and policy_key not in unused:
                reasons.append(
                    f"utilisation {used:,}/{allowed:,}: {used:,} of the {allowed:,} "
                    f"(peer x port) pairs it allows ({len(endpoints):,} observed peers x "
                    f"{_port_units(entry.rule):,} ports) carried traffic"
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
