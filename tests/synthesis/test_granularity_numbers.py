"""granularity_report (rules and grants compared as numbers) against the straightforward
count over Rule and (direction, Peer, PortSpec) sets, on policies whose equal peers, ports
and rules are sometimes one object and sometimes equal copies."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from recommender.analysis.clustering.compaction import grants
from recommender.policy.model import Evidence, LabelSelector, Peer, Policy, PortSpec, Rule
from recommender.synthesis.granularity import granularity_report
from recommender.synthesis.synthesizer import Findings


def _reference(policies: dict[tuple[str, str], Policy], clusters: dict, denies: int) -> list:
    observed = sum(len(grants(p.rules)) for p in policies.values())
    per_cluster: dict[Any, list[Policy]] = defaultdict(list)
    per_namespace: dict[str, list[Policy]] = defaultdict(list)
    for owner, policy in sorted(policies.items()):
        label = clusters.get(owner)
        per_cluster[(owner[0], label) if label is not None else owner].append(policy)
        per_namespace[owner[0]].append(policy)
    out = []
    for name, groups in (
        ("workload", {o: [p] for o, p in policies.items()}),
        ("cluster", per_cluster),
        ("namespace", per_namespace),
    ):
        rules = unobserved = 0
        for members in groups.values():
            rules += len({r for p in members for r in p.ingress})
            rules += len({r for p in members for r in p.egress})
            own = [grants(p.rules) for p in members]
            union = set().union(*own)
            unobserved += sum(len(union) - len(mine) for mine in own)
        out.append((name, len(groups) + denies, rules, unobserved, observed))
    return out


def _peer(i: int) -> Peer:
    if i == 0:
        return Peer("cidr", cidr="10.0.0.0/8")
    ns = None if i % 2 else LabelSelector.of({"kubernetes.io/metadata.name": f"ns{i % 3}"})
    return Peer("pods", namespace_selector=ns, pod_selector=LabelSelector.of({"app": f"a{i}"}))


_SHARED_PEERS = [_peer(i) for i in range(6)]
_SHARED_PORTS = [PortSpec("TCP", 80), PortSpec("UDP", 53), PortSpec("TCP", 8000, 8080)]


@st.composite
def _rule(draw: Any, direction: str) -> Rule:
    peers = []
    for i in draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)):
        peers.append(_SHARED_PEERS[i] if draw(st.booleans()) else _peer(i))  # equal copy
    ports = []
    for i in draw(st.lists(st.integers(0, 2), max_size=2)):
        spec = _SHARED_PORTS[i]
        copy = PortSpec(spec.protocol, spec.port, spec.end_port)
        ports.append(spec if draw(st.booleans()) else copy)
    evidence = Evidence(connections=draw(st.integers(0, 9)))  # (not part of rule equality)
    return Rule(direction, tuple(peers), tuple(ports), evidence=evidence)  # type: ignore[arg-type]


@st.composite
def _policies(draw: Any) -> tuple[dict[tuple[str, str], Policy], dict]:
    owners = draw(
        st.lists(st.tuples(st.sampled_from(["n1", "n2"]), st.sampled_from("abcdef")), unique=True)
    )
    policies = {}
    pool: list[Rule] = []
    for owner in owners:
        sides = {}
        for direction in ("ingress", "egress"):
            rules = draw(st.lists(_rule(direction), max_size=3))
            if pool and draw(st.booleans()):  # the very same rule object in two policies
                shared = draw(st.sampled_from(pool))
                if shared.direction == direction:
                    rules.append(shared)
            pool += rules
            sides[direction] = tuple(rules)
        policies[owner] = Policy(owner[1], owner[0], LabelSelector.of({"app": owner[1]}), **sides)
    clusters = {o: draw(st.integers(0, 2)) for o in owners if draw(st.booleans())}
    return policies, clusters


@given(_policies())
def test_granularity_counts_match_the_straightforward_sets(case) -> None:
    policies, clusters = case
    findings = Findings(namespaces_in_scope=["n1"], workload_policies=policies)
    got = granularity_report(findings, clusters=clusters)
    want = _reference(policies, clusters, 1)
    assert [
        (lv.level, lv.policies, lv.rules, lv.unobserved_grants, lv.observed_grants)
        for lv in got.levels
    ] == want
