"""Evaluate a whole policy stack: guardrails above and below the application's NetworkPolicies.

:func:`evaluate_stack` answers the question :func:`~recommender.evaluation.evaluator.evaluate`
answers, for :class:`~recommender.guardrails.Guardrails` plus Kubernetes NetworkPolicies, under the
precedence rules of the dialect the guardrails are rendered to (checklist and truth tables in
``docs/evaluator.md``). Each direction is decided at its own end (egress at the source pod, ingress
at the destination pod) and a connection needs both.

``kubernetes`` (ClusterNetworkPolicy, AdminNetworkPolicy / BaselineAdminNetworkPolicy)
    Admin guardrails governing the pod, lowest priority first, rules in order: the first rule
    that matches decides; Allow (Accept) and Deny are final, Pass skips the rest of the Admin
    tier. Then NetworkPolicy: if one isolates the pod, it decides (allowed iff a rule
    matches). Otherwise Baseline guardrails, first match decides. Otherwise allowed.

``calico`` (tiers)
    Tiers by ascending order; a tier applies to a pod when one of its policies selects it for
    the direction; its policies by order, rules in order, the first Allow or Deny decides and
    Pass jumps to the next tier; a tier that applies but matches nothing ends with its
    ``defaultAction`` (Deny unless set). Guardrails render as tier ``<name>`` (order 100) and
    ``<name>-baseline`` (order 5,000,000) with ``defaultAction: Pass``; NetworkPolicies sit in
    the ``default`` tier (order 1,000,000, default action Deny). No tier applies: allowed.

``cilium``
    Deny over allow, regardless of order: a matching deny rule of any guardrail denies, unless
    one of its exceptions matches (:func:`~recommender.guardrails.cilium.deny_exceptions`:
    allow or pass rules before it in its guardrail or in a lower-priority guardrail that
    governs every pod, covering all its ports). Else, if
    a NetworkPolicy selects the pod for the direction (default-deny mode), the connection needs
    an allow rule of a NetworkPolicy or an allow guardrail; guardrails themselves never enable
    default deny (``enableDefaultDeny: false``). Pass rules have no effect of their own, and
    baseline guardrails have no Cilium equivalent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from ..errors import UnsupportedDialectError
from ..guardrails.model import Guardrail, Guardrails, Subject
from ..policy.model import Action, Direction, LabelSelector, Policy, PolicySet, Rule
from .calico_rules import CalicoRule, Flow, endpoint_labels
from .calico_selector import Selector
from .evaluator import Cluster, Endpoint, Namespace, Pod, Verdict, _Check, _supported

__all__ = [
    "DIALECTS",
    "CalicoPolicy",
    "CalicoTier",
    "Dialect",
    "evaluate_stack",
    "evaluate_tiers",
    "guardrail_tiers",
    "with_namespace_labels",
]

Dialect = Literal["kubernetes", "calico", "cilium"]
DIALECTS: Final = ("kubernetes", "calico", "cilium")
#: Tier orders of the Calico rendering (Calico's default tier is 1,000,000).
ADMIN_TIER_ORDER: Final = 100.0
DEFAULT_TIER_ORDER: Final = 1_000_000.0
BASELINE_TIER_ORDER: Final = 5_000_000.0
#: The Calico order of a Kubernetes NetworkPolicy inside the default tier.
NETWORK_POLICY_ORDER: Final = 1000.0
#: A stand-in policy for matching guardrail peers (they always carry a namespace selector).
_CLUSTER_WIDE: Final = Policy("cluster", "", LabelSelector())


@dataclass(frozen=True)
class CalicoPolicy:
    """A policy inside a Calico tier: who it selects, its order, its ordered rules.

    ``subject`` selects pods cluster-wide (a GlobalNetworkPolicy); ``namespace`` with
    ``selector`` selects pods of one namespace (a NetworkPolicy); ``endpoint_selector``, when
    set, is a Calico selector over the endpoint labels Calico gives the pod
    (:func:`~recommender.evaluation.calico_rules.endpoint_labels`) and replaces both. ``types``
    lists the directions it applies to. Rules are Kubernetes-model rules or Calico rules
    (:class:`~recommender.evaluation.calico_rules.CalicoRule`).
    """

    name: str
    order: float
    types: tuple[Direction, ...]
    ingress: tuple[Rule | CalicoRule, ...] = ()
    egress: tuple[Rule | CalicoRule, ...] = ()
    subject: Subject | None = None
    namespace: str | None = None
    selector: LabelSelector = field(default_factory=LabelSelector)
    endpoint_selector: Selector | None = None

    def selects(self, pod: Pod, cluster: Cluster) -> bool:
        """Whether the policy applies to ``pod``."""
        if self.endpoint_selector is not None:
            if self.namespace is not None and pod.namespace != self.namespace:
                return False  # what its selector's projectcalico.org/namespace term says
            return self.endpoint_selector.evaluate(endpoint_labels(pod, cluster))
        if self.subject is not None:
            labels = cluster.namespaces[pod.namespace].labels
            return self.subject.matches(labels, pod.labels)
        return pod.namespace == self.namespace and self.selector.matches(dict(pod.labels))

    def as_policy(self) -> Policy:
        """The model policy whose namespace resolves peers without a namespace selector."""
        if self.namespace is None:
            return _CLUSTER_WIDE
        return Policy(self.name, self.namespace, self.selector)


@dataclass(frozen=True)
class CalicoTier:
    """A Calico Tier: its order (smaller first), its policies and its default action."""

    name: str
    order: float
    policies: tuple[CalicoPolicy, ...]
    default_action: Literal["deny", "pass"] = "deny"


def with_namespace_labels(cluster: Cluster, guardrails: Guardrails | None) -> Cluster:
    """``cluster`` with the namespace labels the guardrails file declares added."""
    if guardrails is None or not guardrails.namespace_labels:
        return cluster
    namespaces = dict(cluster.namespaces)
    for name, labels in guardrails.namespace_labels.items():
        known = dict(namespaces[name].labels) if name in namespaces else {}
        namespaces[name] = Namespace(name, {**known, **labels})
    return Cluster(namespaces, cluster.pods)


def guardrail_tiers(guardrails: Guardrails, policy_set: PolicySet) -> tuple[CalicoTier, ...]:
    """The Calico tiers the guardrails and NetworkPolicies render to (see the module doc)."""
    for policy in policy_set.policies:
        _supported(policy)

    def tier(name: str, order: float, members: Sequence[Guardrail]) -> CalicoTier:
        return CalicoTier(
            name,
            order,
            tuple(
                CalicoPolicy(g.name, float(g.priority), _types(g), g.ingress, g.egress, g.subject)
                for g in members
            ),
            "pass",
        )

    default = CalicoTier(
        "default",
        DEFAULT_TIER_ORDER,
        tuple(
            CalicoPolicy(
                f"{p.namespace}/{p.name}",
                NETWORK_POLICY_ORDER,
                p.policy_types,
                p.ingress,
                p.egress,
                namespace=p.namespace,
                selector=p.selector,
            )
            for p in policy_set.policies
        ),
        "deny",
    )
    return (
        tier(guardrails.name, ADMIN_TIER_ORDER, guardrails.admin),
        default,
        tier(f"{guardrails.name}-baseline", BASELINE_TIER_ORDER, guardrails.baseline),
    )


def _types(guardrail: Guardrail) -> tuple[Direction, ...]:
    return tuple(d for d in ("ingress", "egress") if getattr(guardrail, d))


def evaluate_tiers(
    tiers: Iterable[CalicoTier],
    cluster: Cluster,
    src: Pod | Endpoint | str,
    dst: Pod | Endpoint | str,
    protocol: str,
    port: int | None,
    *,
    ipblock_matches_pods: bool = False,
    flow: Flow | None = None,
    selection: dict[tuple[str, str], tuple[tuple[CalicoTier, tuple[CalicoPolicy, ...]], ...]]
    | None = None,
) -> Verdict:
    """Whether Calico tiers allow ``src`` to reach ``dst`` (semantics in the module doc);
    ``flow`` is what the flows tell Calico rules beyond that (an HTTP request, the family).
    ``selection``, when given, keeps the policies that select each pod (by ``namespace/name``
    and direction) from one call to the next: it must belong to these tiers and this cluster.

    Examples
    --------
    >>> from recommender.policy.model import Peer
    >>> cluster = Cluster({}, (Pod("a", "web"), Pod("b", "db")))
    >>> deny = Rule("ingress", (Peer("pods", namespace_selector=LabelSelector()),), (), "deny")
    >>> tier = CalicoTier("security", 100, (CalicoPolicy("no-in", 1, ("ingress",), (deny,),
    ...                                                  subject=Subject()),))
    >>> evaluate_tiers([tier], cluster, "a/web", "b/db", "TCP", 80).ingress
    'denied by security/no-in ingress rule 0'
    """
    ordered = tuple(sorted(tiers, key=lambda t: (t.order, t.name)))

    def selecting(pod: Pod, direction: Direction
                  ) -> tuple[tuple[CalicoTier, tuple[CalicoPolicy, ...]], ...]:
        key = (pod.key, direction)
        found = None if selection is None else selection.get(key)
        if found is None:
            found = tuple(
                (tier, applicable)
                for tier in ordered
                for applicable in (tuple(sorted(
                    (p for p in tier.policies
                     if direction in p.types and p.selects(pod, check_cluster)),
                    key=lambda p: (p.order, p.name),
                )),)
                if applicable
            )
            if selection is not None:
                selection[key] = found
        return found

    check_cluster = cluster

    def decide(check: _Check, pod: Pod, peer: Pod | Endpoint, direction: Direction
               ) -> tuple[bool, str, list[str]]:
        for tier, applicable in selecting(pod, direction):
            action, reason, by = _first_match(
                check, applicable, peer, direction, tier.name, flow
            )
            if action == "allow":
                return True, reason, by
            if action == "deny":
                return False, reason, []
            if action is None and tier.default_action == "deny":
                return False, f"end of tier {tier.name}: no rule matches", []
        return True, "no tier decides", []

    return _both_ends(cluster, src, dst, protocol, port, ipblock_matches_pods, decide)


def _first_match(
    check: _Check,
    policies: Sequence[CalicoPolicy],
    peer: Pod | Endpoint,
    direction: Direction,
    tier: str,
    flow: Flow | None = None,
) -> tuple[Action | None, str, list[str]]:
    """The action of the first matching rule of ``policies`` (None: no rule matches)."""
    for policy in policies:
        rules = policy.ingress if direction == "ingress" else policy.egress
        for index, rule in enumerate(rules):
            if (
                rule.matches(check, flow)
                if isinstance(rule, CalicoRule)
                else check._rule_matches(policy.as_policy(), rule, peer)
            ):
                verb = {"allow": "allowed", "deny": "denied", "pass": "passed"}[rule.action]
                key = policy.name if policy.namespace is not None else f"{tier}/{policy.name}"
                return rule.action, f"{verb} by {key} {direction} rule {index}", [key]
    return None, "", []


def evaluate_stack(
    guardrails: Guardrails | None,
    policy_set: PolicySet,
    cluster: Cluster,
    src: Pod | Endpoint | str,
    dst: Pod | Endpoint | str,
    protocol: str,
    port: int | None,
    *,
    dialect: Dialect = "kubernetes",
    ipblock_matches_pods: bool = False,
) -> Verdict:
    """Whether guardrails plus NetworkPolicies allow a connection, under ``dialect`` precedence.

    Parameters
    ----------
    guardrails : Guardrails or None
        The cluster-wide rules (None: NetworkPolicies alone).
    policy_set : PolicySet
        The application's Kubernetes NetworkPolicies (allow rules).
    cluster : Cluster
        Namespaces (with labels; see :func:`with_namespace_labels`) and pods.
    src, dst : Pod, Endpoint or str
        The endpoints; a string is ``namespace/pod`` or an IP address.
    protocol : str
        ``TCP``, ``UDP`` or ``SCTP``.
    port : int or None
        The destination port.
    dialect : {"kubernetes", "calico", "cilium"}
        Whose precedence rules apply (see the module doc).
    ipblock_matches_pods : bool, default False
        Whether CIDR peers match pod addresses.

    Returns
    -------
    Verdict
        ``policies`` lists ``namespace/name`` of NetworkPolicies and ``<tier>/<guardrail>``
        of guardrails that allowed the connection.

    Raises
    ------
    UnsupportedDialectError
        For a NetworkPolicy with deny rules or tiers, an unknown dialect, or baseline guardrails
        under ``cilium``.
    """
    if guardrails is None:
        guardrails = Guardrails()
    if dialect in ("kubernetes", "calico"):
        # ClusterNetworkPolicy's Admin / NetworkPolicy / Baseline order is Calico's tier model
        # with a Pass default in the guardrail tiers and Deny in the NetworkPolicy tier.
        tiers = _tiers(guardrails, policy_set, dialect)
        return evaluate_tiers(
            tiers, cluster, src, dst, protocol, port, ipblock_matches_pods=ipblock_matches_pods
        )
    if dialect != "cilium":
        raise UnsupportedDialectError(
            f"Unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}."
        )
    if guardrails.baseline:
        raise UnsupportedDialectError(
            f"Guardrail {guardrails.baseline[0].name!r} is in the baseline tier, which Cilium "
            "cannot express: its deny rules override every allow rule."
        )
    for policy in policy_set.policies:
        _supported(policy)

    def decide(check: _Check, pod: Pod, peer: Pod | Endpoint, direction: Direction
               ) -> tuple[bool, str, list[str]]:
        governing = [
            g for g in guardrails.admin
            if g.subject.matches(cluster.namespaces[pod.namespace].labels, pod.labels)
        ]
        for g in governing:
            reason = _cilium_deny(check, guardrails, g, peer, direction)
            if reason:
                return False, reason, []
        ok, reason, by = check.direction(policy_set, direction)
        if ok or reason.startswith("not isolated"):
            return ok, reason, by
        for g in governing:
            rules = g.ingress if direction == "ingress" else g.egress
            for index, rule in enumerate(rules):
                if rule.action == "allow" and check._rule_matches(_CLUSTER_WIDE, rule, peer):
                    key = f"{guardrails.name}/{g.name}"
                    return True, f"allowed by {key} {direction} rule {index}", [key]
        return ok, reason, by

    return _both_ends(cluster, src, dst, protocol, port, ipblock_matches_pods, decide)


#: Tiers already built, by identity of (guardrails, policy set, dialect): replay evaluates the
#: same stack for thousands of connections.
_TIER_CACHE: dict[tuple[int, int, str], tuple[Guardrails, PolicySet, tuple[CalicoTier, ...]]] = {}
_TIER_CACHE_SIZE: Final = 256


def _tiers(guardrails: Guardrails, policy_set: PolicySet, dialect: str
           ) -> tuple[CalicoTier, ...]:
    key = (id(guardrails), id(policy_set), dialect)
    found = _TIER_CACHE.get(key)
    if found is not None and found[0] is guardrails and found[1] is policy_set:
        return found[2]
    tiers = guardrail_tiers(guardrails, policy_set)
    if dialect == "kubernetes":
        tiers = tuple(replace(t, name=_CNP_TIERS.get(i, t.name)) for i, t in enumerate(tiers))
    if len(_TIER_CACHE) >= _TIER_CACHE_SIZE:
        _TIER_CACHE.clear()
    _TIER_CACHE[key] = (guardrails, policy_set, tiers)  # holding them keeps the ids unique
    return tiers


#: The tier names ClusterNetworkPolicy uses, by position in guardrail_tiers().
_CNP_TIERS: Final = {0: "admin", 1: "networkpolicy", 2: "baseline"}


def _cilium_deny(check: _Check, guardrails: Guardrails, guardrail: Guardrail,
                 peer: Pod | Endpoint, direction: Direction) -> str:
    """Why a deny rule of ``guardrail`` drops the connection ("" if none does)."""
    from ..guardrails.cilium import deny_exceptions

    rules = guardrail.ingress if direction == "ingress" else guardrail.egress
    for index, rule in enumerate(rules):
        if rule.action != "deny" or not check._rule_matches(_CLUSTER_WIDE, rule, peer):
            continue
        exceptions = deny_exceptions(guardrails, guardrail, rule)
        if not any(check._rule_matches(_CLUSTER_WIDE, e, peer) for e in exceptions):
            return f"denied by {guardrails.name}/{guardrail.name} {direction} rule {index}" \
                " (deny over allow)"
    return ""


def _both_ends(
    cluster: Cluster,
    src: Pod | Endpoint | str,
    dst: Pod | Endpoint | str,
    protocol: str,
    port: int | None,
    ipblock_matches_pods: bool,
    decide: object,
) -> Verdict:
    """Decide egress at the source pod and ingress at the destination pod."""
    source = cluster.endpoint(src) if isinstance(src, str) else src
    target = cluster.endpoint(dst) if isinstance(dst, str) else dst
    if isinstance(source, Pod) and isinstance(target, Pod) and source.key == target.key:
        return Verdict(True, "loopback", "loopback")
    check = _Check(cluster, source, target, protocol.upper(), port, ipblock_matches_pods)
    results: dict[str, tuple[bool, str, list[str]]] = {}
    for direction, pod, peer in (("egress", source, target), ("ingress", target, source)):
        if not isinstance(pod, Pod):
            results[direction] = (True, "not a pod", [])
        else:
            results[direction] = decide(check, pod, peer, direction)  # type: ignore[operator]
    (e_ok, e_why, e_by), (i_ok, i_why, i_by) = results["egress"], results["ingress"]
    return Verdict(e_ok and i_ok, e_why, i_why, tuple(sorted(set(e_by + i_by))))
