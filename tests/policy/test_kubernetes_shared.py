"""render_kubernetes over a policy set whose policies share selector, peer and port objects
(as synthesis makes them): the manifests must be those of rendering every policy on its own,
share no dict or list (a caller may change one manifest), and a bad value must be reported in
the policy that holds it even after good uses of its neighbours. A guard for any memoisation
of the renderer (one was tried and bought nothing: making the manifests' dicts is the cost)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recommender.errors import SynthesisError
from recommender.policy.kubernetes import render_kubernetes
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

_NS = LabelSelector.of({"kubernetes.io/metadata.name": "other"})
_SELECTORS = [LabelSelector.of({"app": "a"}), LabelSelector.of({"app": "b", "tier": "x"})]
_PEERS = [
    Peer("pods", pod_selector=_SELECTORS[0]),
    Peer("pods", namespace_selector=_NS, pod_selector=_SELECTORS[1]),
    Peer("pods", namespace_selector=_NS),
    Peer("pods"),
    Peer("pods", pod_selector=LabelSelector((), (("app", "In", ("a", "b")),))),
    Peer("cidr", cidr="10.0.0.0/8", except_=("10.1.0.0/16",)),
]
_PORTS = [PortSpec("TCP", 80), PortSpec("UDP", 53), PortSpec("TCP", 8000, 8080), PortSpec("SCTP")]


@st.composite
def _policy_sets(draw: Any) -> PolicySet:
    policies = []
    for i in range(draw(st.integers(1, 6))):
        sides = {}
        for direction in ("ingress", "egress"):
            sides[direction] = tuple(
                Rule(
                    direction,  # type: ignore[arg-type]
                    tuple(draw(st.lists(st.sampled_from(_PEERS), max_size=3))),
                    tuple(draw(st.lists(st.sampled_from(_PORTS), max_size=2))),
                )
                for _ in range(draw(st.integers(0, 2)))
            )
        selector = draw(st.sampled_from([*_SELECTORS, LabelSelector()]))
        policies.append(Policy(f"p{i}", "shop", selector, labels=(("team", "t"),), **sides))
    return PolicySet(tuple(policies))


def _containers(value: Any) -> list[Any]:
    out = []
    if isinstance(value, dict | list):
        out.append(value)
        for item in value.values() if isinstance(value, dict) else value:
            out += _containers(item)
    return out


@given(_policy_sets())
def test_rendering_together_is_rendering_each_alone(policy_set: PolicySet) -> None:
    together = render_kubernetes(policy_set)
    alone = [render_kubernetes(PolicySet((p,)))[0] for p in policy_set.policies]
    assert together == alone
    assert [list(m["spec"]) for m in together] == [list(m["spec"]) for m in alone]
    ids = [id(c) for m in together for c in _containers(m)]
    assert len(ids) == len(set(ids))  # no dict or list shared between or within manifests


def test_a_bad_selector_is_reported_in_its_own_policy_after_good_ones() -> None:
    good = Peer("pods", pod_selector=_SELECTORS[0])
    bad = Peer("pods", pod_selector=LabelSelector.of({"app": "-bad-"}))
    policies = (
        Policy("a", "shop", _SELECTORS[0], ingress=(Rule("ingress", (good,)),)),
        Policy("b", "shop", _SELECTORS[0], ingress=(Rule("ingress", (good, bad)),)),
    )
    with pytest.raises(SynthesisError, match="Policy 'b' in namespace 'shop': ingress peer"):
        render_kubernetes(PolicySet(policies))


def test_a_bad_port_is_reported_in_its_own_policy_after_good_ones() -> None:
    peer = Peer("pods", pod_selector=_SELECTORS[0])
    policies = (
        Policy("a", "shop", _SELECTORS[0], ingress=(Rule("ingress", (peer,), (_PORTS[0],)),)),
        Policy(
            "b", "shop", _SELECTORS[0], ingress=(Rule("ingress", (peer,), (PortSpec("TCP", 0),)),)
        ),
    )
    with pytest.raises(SynthesisError, match="Policy 'b' in namespace 'shop': TCP port 0"):
        render_kubernetes(PolicySet(policies))


def test_a_changed_manifest_leaves_the_others_alone() -> None:
    peer = Peer("pods", namespace_selector=_NS, pod_selector=_SELECTORS[1])
    rule = Rule("egress", (peer,), (_PORTS[0],))
    policies = tuple(Policy(f"p{i}", "shop", _SELECTORS[0], egress=(rule,)) for i in range(3))
    first, second, third = render_kubernetes(PolicySet(policies))
    first["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]["app"] = "changed"
    first["spec"]["egress"][0]["ports"][0]["port"] = 1
    assert second["spec"] == third["spec"]
    assert second["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]["app"] == "b"
    assert second["spec"]["egress"][0]["ports"][0]["port"] == 80
