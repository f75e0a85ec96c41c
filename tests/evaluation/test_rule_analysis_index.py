"""The indexed rule analysis and the per-class over-permissiveness count (issue 22) against
the all-pairs versions they replaced.

``tests/_reference_rule_analysis.py`` is the module as it was: every rule compared
with every other rule of the policy set, every pod tried for every peer. On random small policy
sets, clusters and replays, both must give the same findings, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import _reference_rule_analysis as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.evaluation.evaluator import Cluster, Namespace, Pod, evaluate
from recommender.evaluation.pair_classes import count_allowed_pairs
from recommender.evaluation.rule_analysis import find_broad_rules, find_redundant_rules
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

NAMESPACES = ("a", "b", "c")
LABELS = (("app", "web"), ("app", "api"), ("app", "db"), ("tier", "front"), ("tier", "back"))
EXPRESSIONS = (("tier", "Exists", ()), ("app", "In", ("api", "web")), ("app", "NotIn", ("db",)))
ADDRESSES = ("10.0.0.1", "10.0.1.7", "10.1.0.3", "192.168.4.4", "2001:db8::1", "8.8.8.8")
CIDRS = ("10.0.0.0/8", "10.0.0.0/16", "10.0.0.0/24", "0.0.0.0/0", "2001:db8::/32", "8.8.8.8/32")

selectors = st.builds(
    lambda labels, exprs: LabelSelector(tuple(sorted(dict(labels).items())), tuple(sorted(exprs))),
    st.lists(st.sampled_from(LABELS), max_size=2),
    st.lists(st.sampled_from(EXPRESSIONS), max_size=1, unique=True),
)
ns_selectors = st.one_of(
    st.none(),
    st.just(LabelSelector()),
    st.sampled_from(NAMESPACES).map(
        lambda n: LabelSelector.of({"kubernetes.io/metadata.name": n})
    ),
    st.just(LabelSelector.of({"env": "prod"})),
)
pod_peers = st.builds(
    lambda ns, pod: Peer("pods", namespace_selector=ns, pod_selector=pod),
    ns_selectors,
    st.one_of(st.none(), selectors),
)
cidr_peers = st.builds(
    lambda block, holes: Peer("cidr", cidr=block, except_=tuple(holes)),
    st.sampled_from(CIDRS),
    st.lists(st.sampled_from(("10.0.0.0/24", "10.0.1.0/24", "8.8.8.8/32")), max_size=1),
)
port_specs = st.one_of(
    st.builds(PortSpec, st.sampled_from(("TCP", "UDP")), st.sampled_from((53, 80, 443))),
    st.just(PortSpec("TCP")),
    st.just(PortSpec("TCP", 80, 90)),
    st.just(PortSpec("TCP", 1, 1000)),
    st.just(PortSpec("TCP", name="http")),
)


@st.composite
def rules(draw: Any, direction: str) -> Rule:
    peers = draw(st.lists(st.one_of(pod_peers, cidr_peers), max_size=2))
    ports = draw(st.lists(port_specs, max_size=2))
    return Rule(direction, tuple(peers), tuple(ports))  # type: ignore[arg-type]


@st.composite
def policies(draw: Any, name: str) -> Policy:
    types = draw(st.sampled_from((("ingress",), ("egress",), ("ingress", "egress"))))
    return Policy(
        name,
        draw(st.sampled_from(NAMESPACES)),
        draw(selectors),
        types,
        tuple(draw(st.lists(rules("ingress"), max_size=3))),
        tuple(draw(st.lists(rules("egress"), max_size=3))),
    )


@st.composite
def policy_sets(draw: Any) -> PolicySet:
    count = draw(st.integers(0, 5))
    return PolicySet(tuple(draw(policies(f"p{i}")) for i in range(count)))


@dataclass(frozen=True)
class FakeCoverage:
    """What the analyses read of a replay."""

    unused_rules: tuple[dict[str, Any], ...]
    rule_traffic: dict[Any, frozenset[tuple[str, str, int | None]]]
    cluster: Cluster | None
    external_addresses: frozenset[str] = field(default_factory=frozenset)


@st.composite
def coverages(draw: Any, policy_set: PolicySet) -> FakeCoverage:
    pods = []
    for i in range(draw(st.integers(0, 6))):
        labels = dict(draw(st.lists(st.sampled_from(LABELS), max_size=2)))
        pods.append(Pod(draw(st.sampled_from(NAMESPACES)), f"w{i}", labels))
    namespaces = {
        n: Namespace(n, {"env": "prod"} if draw(st.booleans()) else {}) for n in NAMESPACES
    }
    cluster = Cluster(namespaces, tuple(pods))
    external = frozenset(draw(st.lists(st.sampled_from(ADDRESSES), max_size=4)))
    peers = [p.key for p in pods] + sorted(external)
    keys = [
        (p.namespace, p.name, d, i)
        for p in policy_set.policies
        for d, rs in (("ingress", p.ingress), ("egress", p.egress))
        for i in range(len(rs))
    ]
    traffic = {}
    unused = []
    for key in keys:
        used = draw(st.lists(st.sampled_from(peers), max_size=3)) if peers else []
        if used:
            traffic[key] = frozenset((p, "TCP", 80) for p in used)
        else:
            unused.append({"policy": f"{key[0]}/{key[1]}", "direction": key[2], "rule": key[3]})
    return FakeCoverage(tuple(unused), traffic, cluster, external)


def dicts(findings: Any) -> list[dict[str, Any]]:
    return [f.to_dict() for f in findings]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_indexed_analysis_matches_all_pairs(data: Any) -> None:
    policy_set = data.draw(policy_sets())
    coverage = data.draw(st.one_of(st.none(), coverages(policy_set)))
    assert dicts(find_redundant_rules(policy_set, coverage)) == dicts(
        reference.find_redundant_rules(policy_set, coverage)
    )
    assert dicts(find_broad_rules(policy_set, coverage)) == dicts(
        reference.find_broad_rules(policy_set, coverage)
    )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_same_selector_policies_are_found_as_coverers(data: Any) -> None:
    """Many policies of one namespace with overlapping selectors: the case the index prunes."""
    base = data.draw(policies("base"))
    others = [
        Policy(f"p{i}", base.namespace, data.draw(selectors), base.policy_types,
               base.ingress[:1] + tuple(data.draw(st.lists(rules("ingress"), max_size=2))),
               base.egress[:1])
        for i in range(data.draw(st.integers(1, 4)))
    ]
    policy_set = PolicySet((base, *others))
    found = dicts(find_redundant_rules(policy_set))
    assert found == dicts(reference.find_redundant_rules(policy_set))


# ------------------------------------------------------------------ over-permissiveness by class


def pairwise(
    policy_set: PolicySet,
    cluster: Cluster,
    ports: list[tuple[str, int]],
    observed: set[tuple[int, int, int]],
) -> tuple[int, tuple[str, ...]]:
    """The replay's former count: every (source, destination, port) judged by the evaluator."""
    pods = cluster.pods
    allowed = 0
    examples: list[str] = []
    for i, src in enumerate(pods):
        for j, dst in enumerate(pods):
            if i == j:
                continue
            for k, (protocol, port) in enumerate(ports):
                if (i, j, k) in observed:
                    continue
                if evaluate(policy_set, cluster, src, dst, protocol, port).allowed:
                    allowed += 1
                    if len(examples) < 20:
                        examples.append(f"{src.key} -> {dst.key} {protocol}/{port}")
    return allowed, tuple(examples)


@st.composite
def clusters(draw: Any) -> Cluster:
    pods = []
    for i in range(draw(st.integers(0, 7))):
        labels = dict(draw(st.lists(st.sampled_from(LABELS), max_size=2)))
        pods.append(Pod(draw(st.sampled_from(NAMESPACES)), f"w{i}", labels))
    pods.sort(key=lambda p: p.key)
    namespaces = {
        n: Namespace(n, {"env": "prod"} if draw(st.booleans()) else {}) for n in NAMESPACES
    }
    return Cluster(namespaces, tuple(pods))


PORTS = [("TCP", 53), ("TCP", 80), ("TCP", 85), ("TCP", 443), ("UDP", 53)]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_class_count_matches_pairwise(data: Any) -> None:
    policy_set = data.draw(policy_sets())
    cluster = data.draw(clusters())
    ports = sorted(data.draw(st.lists(st.sampled_from(PORTS), min_size=1, unique=True)))
    n = len(cluster.pods)
    triples = [(i, j, k) for i in range(n) for j in range(n) if i != j for k in range(len(ports))]
    observed = set(data.draw(st.lists(st.sampled_from(triples), max_size=6))) if triples else set()
    examples = data.draw(st.sampled_from((20, 3)))
    counted = count_allowed_pairs(
        policy_set, cluster, cluster.pods, ports, observed, budget=10_000, examples=examples
    )
    allowed, expected = pairwise(policy_set, cluster, ports, observed)
    assert counted.exact
    assert counted.allowed == allowed
    assert counted.examples == expected[:examples]
    # Over the budget: an upper bound, flagged, without examples.
    bound = count_allowed_pairs(policy_set, cluster, cluster.pods, ports, observed, budget=0)
    if not bound.exact:
        assert bound.allowed >= allowed and bound.examples == ()


# ------------------------------------------------------------------ the replay's indexed judge


@st.composite
def named_port_clusters(draw: Any) -> Cluster:
    """:func:`clusters`, some pods with a named container port."""
    cluster = draw(clusters())
    pods = tuple(
        Pod(p.namespace, p.name, p.labels, None,
            {"http": ("TCP", draw(st.sampled_from((80, 443))))} if draw(st.booleans()) else {})
        for p in cluster.pods
    )  # fmt: skip
    return Cluster(cluster.namespaces, pods)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_indexed_judge_and_rule_use_match_the_evaluator(data: Any) -> None:
    """The replay judges a query on the policies selecting its pods, straight from their
    rules, and marks a rule used when it matches: the verdict (reasons and allowing policies
    included) must be the evaluator's on the whole policy set, and the used rules those
    whose one-rule policy the evaluator says allows the query."""
    from recommender.evaluation.evaluator import Endpoint
    from recommender.evaluation.replay import _Judge, _one_rule, _Query, _RuleUse

    policy_set = data.draw(policy_sets())
    if data.draw(st.booleans()):  # a default deny, named after the others, selecting every pod
        deny = Policy("zz-deny", data.draw(st.sampled_from(NAMESPACES)), LabelSelector(),
                      ("ingress", "egress"))  # fmt: skip
        policy_set = PolicySet((*policy_set.policies, deny))
    cluster = data.draw(named_port_clusters())
    ends: list[Pod | Endpoint] = [*cluster.pods, *(Endpoint(a) for a in ADDRESSES[:3])]
    judge = _Judge(policy_set, cluster, {(p.namespace, p.name): p for p in cluster.pods})
    used = _RuleUse(judge)
    queries = data.draw(
        st.lists(
            st.tuples(st.sampled_from(ends), st.sampled_from(ends), st.sampled_from(PORTS)),
            max_size=12,
        )
    ) if cluster.pods else []
    expected_used = set()
    for src, dst, (protocol, port) in queries:
        if not isinstance(src, Pod) and not isinstance(dst, Pod):
            continue
        assert judge.verdict(src, dst, protocol, port) == evaluate(
            policy_set, cluster, src, dst, protocol, port
        )
        used.observe(_Query(src, dst, protocol, port))
        for policy in policy_set.policies:
            for direction, rules_ in (("ingress", policy.ingress), ("egress", policy.egress)):
                if direction not in policy.policy_types:
                    continue
                for index, rule in enumerate(rules_):
                    single = PolicySet((_one_rule(policy, direction, rule),))  # type: ignore[arg-type]
                    verdict = evaluate(single, cluster, src, dst, protocol, port)
                    reason = verdict.egress if direction == "egress" else verdict.ingress
                    if reason.startswith("allowed by"):
                        expected_used.add((policy.namespace, policy.name, direction, index))
    assert used.used == expected_used


def test_indexed_judge_lists_isolating_policies_in_policy_set_order() -> None:
    # The judge gathers the source's policies, then the destination's; the evaluator reads a
    # PolicySet, sorted by namespace and name: the reasons must list them in that order.
    from recommender.evaluation.replay import _Judge

    policy_set = PolicySet((
        Policy("allow-db", "a", LabelSelector.of({"app": "db"}), ("ingress",)),
        Policy("default-deny", "a", LabelSelector(), ("ingress", "egress")),
    ))  # fmt: skip
    web, db = Pod("a", "web", {"app": "web"}), Pod("a", "db", {"app": "db"})
    cluster = Cluster({}, (db, web))
    judge = _Judge(policy_set, cluster, {(p.namespace, p.name): p for p in cluster.pods})
    verdict = judge.verdict(web, db, "TCP", 80)
    assert verdict.ingress == "isolated by a/allow-db, a/default-deny; no rule matches"
    assert verdict == evaluate(policy_set, cluster, web, db, "TCP", 80)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_class_count_with_the_callers_isolating_policies(data: Any) -> None:
    """The replay tells the count each pod's isolating policies (its judge has them, in
    policy-set order); the count must be the pairwise one, as with its own index."""
    policy_set = data.draw(policy_sets())
    cluster = data.draw(clusters())
    ports = sorted(data.draw(st.lists(st.sampled_from(PORTS), min_size=1, unique=True)))
    n = len(cluster.pods)
    triples = [(i, j, k) for i in range(n) for j in range(n) if i != j for k in range(len(ports))]
    observed = set(data.draw(st.lists(st.sampled_from(triples), max_size=6))) if triples else set()

    def isolating(i: int, direction: str) -> list[Policy]:
        pod = cluster.pods[i]
        return [
            p for p in policy_set.policies
            if p.namespace == pod.namespace and direction in p.policy_types
            and p.selector.matches(pod.labels)
        ]  # fmt: skip

    counted = count_allowed_pairs(
        policy_set, cluster, cluster.pods, ports, observed, budget=10_000, isolating=isolating
    )
    allowed, expected = pairwise(policy_set, cluster, ports, observed)
    assert counted.exact and counted.allowed == allowed and counted.examples == expected
    assert counted == count_allowed_pairs(
        policy_set, cluster, cluster.pods, ports, observed, budget=10_000
    )


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_rule_use_recorded_with_the_verdict_is_the_observed_use(data: Any) -> None:
    """The replay's judge records rule use while judging (every rule of the isolating
    policies tried once): the same verdicts, used rules and traffic as judging and then
    observing each query apart."""
    from recommender.evaluation.evaluator import Endpoint
    from recommender.evaluation.replay import _Judge, _Query, _RuleUse

    policy_set = data.draw(policy_sets())
    cluster = data.draw(named_port_clusters())
    ends: list[Pod | Endpoint] = [*cluster.pods, *(Endpoint(a) for a in ADDRESSES[:3])]
    queries = data.draw(
        st.lists(
            st.tuples(st.sampled_from(ends), st.sampled_from(ends), st.sampled_from(PORTS)),
            max_size=12,
        )
    ) if cluster.pods else []
    pods = {(p.namespace, p.name): p for p in cluster.pods}
    apart, together = _Judge(policy_set, cluster, pods), _Judge(policy_set, cluster, pods)
    observed, recorded = _RuleUse(apart), _RuleUse(together)
    together.rule_use = recorded
    for src, dst, (protocol, port) in queries:
        if not isinstance(src, Pod) and not isinstance(dst, Pod):
            continue
        verdict = apart.verdict(src, dst, protocol, port)
        observed.observe(_Query(src, dst, protocol, port))
        assert together.verdict(src, dst, protocol, port) == verdict
    assert recorded.used == observed.used
    assert recorded.traffic == observed.traffic
