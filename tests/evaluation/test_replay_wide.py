"""Over-permissiveness counted per selector class in the replay (issue 22): the same figure as
pair by pair, computed past the pairwise limit, and an upper bound flagged as an estimate when
the class sets are too large to list."""

from __future__ import annotations

from pathlib import Path

import pytest

import recommender.evaluation.replay as replay_module
from recommender import read_flows, recommend
from recommender.evaluation.replay import replay
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, Rule

SAMPLES = Path(__file__).resolve().parents[2] / "sample_flows"


@pytest.fixture(scope="module")
def sample():
    table = read_flows(SAMPLES / "hubble.jsonl.gz")
    return table, recommend(table)


def _allow_all(namespaces: list[str]) -> PolicySet:
    every = Rule("ingress", ())
    out = Rule("egress", ())
    return PolicySet(
        tuple(Policy("all", ns, LabelSelector(), ("ingress", "egress"), (every,), (out,))
              for ns in namespaces)
    )


def test_class_count_is_the_pairwise_count(sample):
    table, rec = sample
    by_class = replay(rec.policy_set, table).over_permissive
    # With a guardrail stack the replay judges pair by pair; an empty one changes no verdict.
    from recommender.guardrails.model import Guardrails

    pairwise = replay(rec.policy_set, table, guardrails=Guardrails()).over_permissive
    assert by_class == pairwise
    assert "estimate" not in by_class.to_dict()


def test_counted_past_the_pairwise_limit(sample):
    table, rec = sample
    full = replay(rec.policy_set, table).over_permissive
    small = replay(rec.policy_set, table, synthetic_limit=1).over_permissive
    assert small == full and small.skipped == ""
    # 0 still means "not wanted" (diff, held-out validation).
    assert replay(rec.policy_set, table, synthetic_limit=0).over_permissive.skipped


def test_over_budget_is_an_upper_bound_flagged_as_estimate(sample, monkeypatch):
    table, _ = sample
    namespaces = sorted({ns for ns in table["dst_namespace"].to_pylist() if ns})
    exact = replay(_allow_all(namespaces), table).over_permissive
    monkeypatch.setattr(replay_module, "PAIR_BUDGET", 0)
    # Every pod admits every pod: no set is listed, so even a budget of 0 stays exact.
    assert replay(_allow_all(namespaces), table).over_permissive == exact
    ns = namespaces[0]
    wide = Rule("ingress", (Peer("pods", namespace_selector=LabelSelector()),))
    policy = Policy("wide", ns, LabelSelector(), ("ingress",), (wide,))
    monkeypatch.setattr(replay_module, "PAIR_BUDGET", 10_000)
    exact_wide = replay(PolicySet((policy,)), table).over_permissive
    monkeypatch.setattr(replay_module, "PAIR_BUDGET", 0)
    bound = replay(PolicySet((policy,)), table).over_permissive
    assert bound.estimate.startswith("upper bound")
    assert bound.to_dict()["estimate"] == bound.estimate
    assert bound.allowed_unobserved >= exact_wide.allowed_unobserved
    assert bound.examples == () and exact_wide.estimate == ""
