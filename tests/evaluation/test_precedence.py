"""Truth tables for policy precedence, written from the upstream documentation.

* ClusterNetworkPolicy (network-policy-api "API overview" and the GKE guide "Configure cluster
  network policies"): Admin tier first, policies by priority (lower first), rules top to
  bottom, the first match decides; Accept and Deny stop evaluation, Pass goes to the
  NetworkPolicy tier; NetworkPolicy: a match allows, an isolated pod without a match is denied;
  not isolated: Baseline tier, first match decides; no match anywhere: allowed.
* Calico tiers (Tier reference, "How policy is evaluated"): tiers that contain a policy that
  applies to the endpoint, smallest order first; policies in order; Allow or Deny ends
  evaluation, Pass goes to the next tier containing a policy that applies; a tier that applies
  but takes no action drops the packet unless its defaultAction says otherwise.
* Cilium ("Deny Policies"): deny policies take precedence over allow policies, whatever their
  kind; the result table for a server with an L3 allow of the client and an L4 deny of 80/TCP:
  curl :81 allowed, curl :80 denied; with an L3 deny of the client, everything denied.

Each row states the expected verdict from those rules, independently of the implementation.
"""

from __future__ import annotations

import pytest

from recommender.errors import UnsupportedDialectError
from recommender.evaluation.evaluator import Cluster, Namespace, Pod
from recommender.evaluation.precedence import (
    CalicoPolicy,
    CalicoTier,
    evaluate_stack,
    evaluate_tiers,
)
from recommender.guardrails import Guardrail, Guardrails, Subject
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

CLUSTER = Cluster(
    {
        "client": Namespace("client", {"env": "prod"}),
        "server": Namespace("server", {"env": "prod", "pci": "true"}),
        "dev": Namespace("dev", {"env": "dev"}),
    },
    (Pod("client", "c", {"app": "c"}), Pod("server", "s", {"app": "s"}), Pod("dev", "d", {})),
)
ALL_PODS = Peer("pods", namespace_selector=LabelSelector())
CLIENT = Peer(
    "pods", namespace_selector=LabelSelector.of({"kubernetes.io/metadata.name": "client"})
)


def ingress(action: str, peer: Peer = ALL_PODS, ports: tuple[PortSpec, ...] = ()) -> Rule:
    return Rule("ingress", (peer,), ports, action, comment=f"{action}-rule")  # type: ignore[arg-type]


def guard(name: str, priority: int, *rules: Rule, tier: str = "admin") -> Guardrail:
    subject = Subject(LabelSelector.of({"kubernetes.io/metadata.name": "server"}))
    return Guardrail(name, priority, subject, tier, tuple(rules))  # type: ignore[arg-type]


#: NetworkPolicies of namespace "server": none, one isolating without a matching rule, one
#: isolating and allowing the client.
NP_NONE = PolicySet()
NP_ISOLATE = PolicySet((Policy("deny", "server", LabelSelector(), ("ingress",)),))
NP_ALLOW = PolicySet(
    (Policy("allow", "server", LabelSelector(), ("ingress",), (Rule("ingress", (CLIENT,)),)),)
)

# (admin guardrails, NetworkPolicies, baseline guardrails, expected client -> server:80)
CNP_TABLE = [
    # no guardrails: NetworkPolicy semantics
    ((), NP_NONE, (), True),
    ((), NP_ISOLATE, (), False),
    ((), NP_ALLOW, (), True),
    # Admin Accept / Deny are final, whatever NetworkPolicy says
    ((ingress("allow"),), NP_ISOLATE, (), True),
    ((ingress("deny"),), NP_ALLOW, (), False),
    ((ingress("deny"),), NP_NONE, (), False),
    # Admin Pass: the NetworkPolicy tier decides
    ((ingress("pass"),), NP_ALLOW, (), True),
    ((ingress("pass"),), NP_ISOLATE, (), False),
    # Pass with no NetworkPolicy: on to Baseline
    ((ingress("pass"),), NP_NONE, (ingress("deny"),), False),
    ((ingress("pass"),), NP_NONE, (ingress("allow"),), True),
    # Baseline only applies where NetworkPolicy does not isolate
    ((), NP_ALLOW, (ingress("deny"),), True),
    ((), NP_ISOLATE, (ingress("allow"),), False),
    ((), NP_NONE, (ingress("deny"),), False),
    ((), NP_NONE, (ingress("allow"),), True),
    # an Admin rule that does not match falls through
    ((ingress("deny", ports=(PortSpec("TCP", 443),)),), NP_NONE, (), True),
    # rules top to bottom: the first match decides
    ((ingress("allow", CLIENT), ingress("deny")), NP_ISOLATE, (), True),
    ((ingress("deny"), ingress("allow", CLIENT)), NP_ALLOW, (), False),
]


@pytest.mark.parametrize(("admin", "policies", "baseline", "expected"), CNP_TABLE)
@pytest.mark.parametrize("dialect", ["kubernetes", "calico"])
def test_cluster_network_policy_precedence(
    admin: tuple[Rule, ...], policies: PolicySet, baseline: tuple[Rule, ...], expected: bool,
    dialect: str,
) -> None:
    # the Calico rendering (tiers with defaultAction Pass around the default tier) means the same
    guardrails = Guardrails(
        "g",
        tuple(
            ([guard("admin", 10, *admin)] if admin else [])
            + ([guard("base", 10, *baseline, tier="baseline")] if baseline else [])
        ),
    )
    verdict = evaluate_stack(guardrails, policies, CLUSTER, "client/c", "server/s", "TCP", 80,
                             dialect=dialect)  # type: ignore[arg-type]
    assert verdict.allowed is expected, verdict


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [("deny", "allow", False), ("allow", "deny", True), ("pass", "deny", True)],
)
def test_lower_priority_number_is_evaluated_first(first: str, second: str, expected: bool) -> None:
    # priorities 5 and 50, declared in the other order: priority, not file order, decides
    guardrails = Guardrails(
        "g", (guard("late", 50, ingress(second)), guard("early", 5, ingress(first)))
    )
    verdict = evaluate_stack(guardrails, NP_ALLOW, CLUSTER, "client/c", "server/s", "TCP", 80)
    assert verdict.allowed is expected


def test_both_directions_are_needed() -> None:
    egress_deny = Guardrail("out", 1, Subject(), "admin", (),
                            (Rule("egress", (ALL_PODS,), (), "deny", comment="x"),))
    verdict = evaluate_stack(Guardrails("g", (egress_deny,)), NP_ALLOW, CLUSTER, "client/c",
                             "server/s", "TCP", 80)
    assert not verdict.allowed and verdict.egress.startswith("denied by")
    assert verdict.ingress.startswith("allowed")


# --------------------------------------------------------------------------- Calico tiers


def tier(name: str, order: float, *policies: CalicoPolicy, default: str = "deny") -> CalicoTier:
    return CalicoTier(name, order, policies, default)  # type: ignore[arg-type]


def pol(name: str, order: float, *rules: Rule, selects: str = "server") -> CalicoPolicy:
    subject = Subject(LabelSelector.of({"kubernetes.io/metadata.name": selects}))
    return CalicoPolicy(name, order, ("ingress",), tuple(rules), subject=subject)


CALICO_TABLE = [
    # no tier applies: allowed (the Kubernetes default profile)
    ([], True),
    ([tier("a", 100, pol("p", 1, ingress("deny"), selects="dev"))], True),
    # smallest order first: a Deny in tier order 100 beats an Allow in tier order 200
    ([tier("b", 200, pol("p", 1, ingress("allow"))), tier("a", 100, pol("p", 1, ingress("deny")))],
     False),
    ([tier("b", 200, pol("p", 1, ingress("deny"))), tier("a", 100, pol("p", 1, ingress("allow")))],
     True),
    # Pass: the next tier that applies decides
    ([tier("a", 100, pol("p", 1, ingress("pass"))), tier("b", 200, pol("p", 1, ingress("deny")))],
     False),
    ([tier("a", 100, pol("p", 1, ingress("pass"))), tier("b", 200, pol("p", 1, ingress("allow")))],
     True),
    # Pass in the last tier: no tier left, allowed
    ([tier("a", 100, pol("p", 1, ingress("pass")))], True),
    # the tier applies but takes no action: end-of-tier deny
    ([tier("a", 100, pol("p", 1, ingress("allow", ports=(PortSpec("TCP", 443),))))], False),
    # ... unless its defaultAction is Pass
    ([tier("a", 100, pol("p", 1, ingress("allow", ports=(PortSpec("TCP", 443),))),
           default="pass")], True),
    # a tier whose policies do not select the endpoint is skipped (no end-of-tier deny)
    ([tier("a", 100, pol("p", 1, ingress("allow"), selects="dev")),
      tier("b", 200, pol("p", 1, ingress("allow")))], True),
    # policy order inside a tier: order 1 before order 2, whatever the names
    ([tier("a", 100, pol("z", 1, ingress("deny")), pol("a", 2, ingress("allow")))], False),
    ([tier("a", 100, pol("z", 2, ingress("deny")), pol("a", 1, ingress("allow")))], True),
]


@pytest.mark.parametrize(("tiers", "expected"), CALICO_TABLE)
def test_calico_tier_precedence(tiers: list[CalicoTier], expected: bool) -> None:
    verdict = evaluate_tiers(tiers, CLUSTER, "client/c", "server/s", "TCP", 80)
    assert verdict.allowed is expected, verdict


# --------------------------------------------------------------------------- Cilium


def cilium(*rules: Rule) -> Guardrails:
    return Guardrails("g", (guard("deny", 10, *rules),))


@pytest.mark.parametrize(
    ("rules", "policies", "port", "expected"),
    [
        # the docs' table, column "L3 allow + L4 deny 80": :81 allowed, :80 denied
        ((ingress("deny", CLIENT, (PortSpec("TCP", 80),)),), NP_ALLOW, 81, True),
        ((ingress("deny", CLIENT, (PortSpec("TCP", 80),)),), NP_ALLOW, 80, False),
        # column "L3 deny of the client": everything denied
        ((ingress("deny", CLIENT),), NP_ALLOW, 81, False),
        # deny over allow: an allow rule before the deny in another policy does not help
        ((ingress("deny", CLIENT),), NP_ALLOW, 80, False),
        # deny-only guardrails never put the pod into default deny (enableDefaultDeny false)
        ((ingress("deny", CLIENT, (PortSpec("TCP", 80),)),), NP_NONE, 81, True),
        # NetworkPolicy default deny stays: isolated without an allow is denied
        ((ingress("deny", CLIENT, (PortSpec("TCP", 80),)),), NP_ISOLATE, 81, False),
        # an allow guardrail adds an allow to a pod in default deny
        ((ingress("allow", CLIENT, (PortSpec("TCP", 81),)),), NP_ISOLATE, 81, True),
        # an earlier pass rule of the same guardrail is carved out of the deny
        ((ingress("pass", CLIENT), ingress("deny")), NP_ALLOW, 80, True),
        ((ingress("pass", CLIENT), ingress("deny")), NP_ISOLATE, 80, False),
    ],
)
def test_cilium_deny_over_allow(
    rules: tuple[Rule, ...], policies: PolicySet, port: int, expected: bool
) -> None:
    verdict = evaluate_stack(cilium(*rules), policies, CLUSTER, "client/c", "server/s", "TCP",
                             port, dialect="cilium")
    assert verdict.allowed is expected, verdict


def test_cilium_deny_wins_over_a_higher_priority_allow_on_some_ports_only() -> None:
    # CNP: the priority-1 Accept on 9090 wins; Cilium: the exception covers only port 9090 of
    # an all-ports deny, so it cannot be carved out and the deny wins (stricter).
    scrape = Guardrail("scrape", 1, Subject(), "admin",
                       (ingress("allow", CLIENT, (PortSpec("TCP", 9090),)),))
    lock = guard("lock", 2, ingress("deny"))
    guardrails = Guardrails("g", (scrape, lock))
    args = (guardrails, NP_NONE, CLUSTER, "client/c", "server/s", "TCP", 9090)
    assert evaluate_stack(*args, dialect="kubernetes").allowed
    assert not evaluate_stack(*args, dialect="cilium").allowed


def test_cilium_has_no_baseline() -> None:
    with pytest.raises(UnsupportedDialectError, match="baseline"):
        evaluate_stack(Guardrails("g", (guard("b", 1, ingress("deny"), tier="baseline"),)),
                       NP_NONE, CLUSTER, "client/c", "server/s", "TCP", 80, dialect="cilium")


def test_external_addresses_and_loopback() -> None:
    metadata = Guardrail("meta", 1, Subject(), "admin", (),
                         (Rule("egress", (Peer("cidr", cidr="169.254.169.254/32"),), (), "deny"),))
    g = Guardrails("g", (metadata,))
    for dialect in ("kubernetes", "calico", "cilium"):
        assert not evaluate_stack(g, NP_NONE, CLUSTER, "client/c", "169.254.169.254", "TCP", 80,
                                  dialect=dialect).allowed  # type: ignore[arg-type]
        assert evaluate_stack(g, NP_NONE, CLUSTER, "client/c", "169.254.169.253", "TCP", 80,
                              dialect=dialect).allowed  # type: ignore[arg-type]
        assert evaluate_stack(g, NP_ISOLATE, CLUSTER, "server/s", "server/s", "TCP", 80,
                              dialect=dialect).ingress == "loopback"  # type: ignore[arg-type]
