"""The self-check's faster paths (issue 22) against the straightforward ones they replaced:
``replay(rule_findings=False)`` and the cluster built from distinct label maps (the
over-permissiveness count told each pod's isolating policies by its caller is tested with the
other class counts, in ``test_rule_analysis_index.py``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender import read_flows, recommend
from recommender.evaluation.evaluator import Cluster, Namespace, Pod
from recommender.evaluation.replay import _cluster, _label_maps, _rule_count, replay
from recommender.policy.model import LabelSelector, Policy, PolicySet, Rule

SAMPLES = Path(__file__).resolve().parents[2] / "sample_flows"
LABELS = {
    "app": ["web", "api"],
    "tier": ["front", "back"],
    "io.cilium.k8s.namespace.labels.team": ["a", "b"],
}


@pytest.fixture(scope="module")
def sample() -> Any:
    table = read_flows(SAMPLES / "hubble.jsonl.gz")
    return table, recommend(table)


# ------------------------------------------------------------------ replay without rule findings


def test_without_rule_findings_only_the_findings_are_left_out(sample: Any) -> None:
    table, rec = sample
    # An allow-all ingress rule, twice: broad, redundant and (for a namespace without
    # traffic) unused findings to leave out.
    every = Rule("ingress", ())
    extra = tuple(
        Policy("wide", ns, LabelSelector(), ("ingress",), (every, every))
        for ns in ("nobody-here", rec.policy_set.policies[0].namespace)
    )
    policy_set = PolicySet((*rec.policy_set.policies, *extra))
    full = replay(policy_set, table)
    lean = replay(policy_set, table, rule_findings=False)
    assert full.unused_rules and full.broad_rules and full.redundant_rules
    assert lean.unused_rules == lean.redundant_rules == lean.broad_rules == ()
    assert lean.rule_traffic == {}
    skipped = {"unused_rules", "redundant_rules", "broad_rules"}
    full_dict, lean_dict = full.to_dict(), lean.to_dict()
    assert {k: v for k, v in full_dict.items() if k not in skipped} == {
        k: v for k, v in lean_dict.items() if k not in skipped
    }
    assert lean.rules == full.rules and lean.over_permissive == full.over_permissive


def test_rule_count_counts_rule_keys_once() -> None:
    rule = Rule("ingress", ())
    a = Policy("a", "ns", LabelSelector(), ("ingress",), (rule, rule), (Rule("egress", ()),))
    twin = dataclasses.replace(a, ingress=(rule,), egress=())  # same name: its keys repeat
    other = Policy("b", "ns", LabelSelector(), ("ingress",), (rule,))
    assert _rule_count(PolicySet((a, twin, other))) == 4
    assert _rule_count(PolicySet(())) == 0


# ------------------------------------------------------------------ the cluster from label maps


def _reference_cluster(rows: list[tuple[Any, Any, Any]]) -> Cluster:
    """The former construction: one dict per row, intersected in row order."""
    maps: dict[tuple[str, str], list[dict[str, str]]] = {}
    for ns, wl, labels in rows:
        if ns is None or wl is None:
            continue
        entry = maps.setdefault((ns, wl), [])
        if labels:
            entry.append(dict(labels))
    pods = []
    ns_labels: dict[str, dict[str, str]] = {}
    for (ns, name), observed in sorted(maps.items()):
        common: dict[str, str] | None = None
        for labels in observed:
            common = dict(labels) if common is None else {
                k: v for k, v in common.items() if labels.get(k) == v
            }
        shared = common or {}
        if not observed:
            shared = {"app": name}
        pods.append(Pod(ns, name, shared))
        prefix = "io.cilium.k8s.namespace.labels."
        ns_labels.setdefault(ns, {}).update(
            {k[len(prefix):]: v for k, v in shared.items() if k.startswith(prefix)}
        )
    return Cluster(
        {ns: Namespace(ns, {**labels, "kubernetes.io/metadata.name": ns})
         for ns, labels in sorted(ns_labels.items())},
        tuple(pods),
    )  # fmt: skip


label_maps = st.one_of(
    st.none(),
    st.lists(
        st.sampled_from([(k, v) for k, vs in LABELS.items() for v in vs]), max_size=3
    ),
)
label_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", None]), st.sampled_from(["web", "api", "db", None]), label_maps
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(label_rows)
def test_cluster_from_distinct_maps_is_the_row_by_row_cluster(rows: list[Any]) -> None:
    table = pa.table(
        {
            "namespace": pa.array([r[0] for r in rows], pa.string()),
            "workload": pa.array([r[1] for r in rows], pa.string()),
            "labels": pa.array([r[2] for r in rows], pa.map_(pa.string(), pa.string())),
        }
    )
    built = _cluster(_label_maps(table), True)
    expected = _reference_cluster(table.to_pylist() and [
        (r["namespace"], r["workload"], r["labels"]) for r in table.to_pylist()
    ])  # fmt: skip
    assert built == expected
    # Label order too (it reaches the report through the graph and rule analysis).
    assert [list(p.labels.items()) for p in built.pods] == [
        list(p.labels.items()) for p in expected.pods
    ]


# ------------------------------------------------------------------ redundant rules, twice


def test_redundant_rules_remembered_per_policy_set_shadowed_per_coverage() -> None:
    """The self-check asks for the redundant rules of one policy set twice (the evidence,
    the edges left out on purpose): the second answer comes from memory, but whether a
    redundant rule is shadowed follows each call's coverage."""
    from recommender.evaluation.rule_analysis import find_redundant_rules
    from recommender.policy.model import Peer, PortSpec

    web = Peer("pods", pod_selector=LabelSelector.of({"app": "web"}))
    rule = Rule("ingress", (web,), (PortSpec("TCP", 8080),))
    api = Policy("api", "shop", LabelSelector.of({"app": "api"}), ("ingress",), (rule, rule))
    policy_set = PolicySet((api,))

    @dataclasses.dataclass(frozen=True)
    class Fake:
        unused_rules: tuple[dict[str, Any], ...]

    unused = Fake(({"policy": "shop/api", "direction": "ingress", "rule": 1},))
    first = find_redundant_rules(policy_set, unused)  # type: ignore[arg-type]
    second = find_redundant_rules(policy_set, Fake(()))  # type: ignore[arg-type]
    assert [(f.kind, f.rule_index) for f in first] == [("shadowed", 1)]
    assert [(f.kind, f.rule_index) for f in second] == [("redundant", 1)]
    assert first[0].covered_by == second[0].covered_by == "shop/api ingress rule 0"
    # An equal but distinct policy set is analysed afresh, with the same answer.
    again = PolicySet((dataclasses.replace(api),))
    assert find_redundant_rules(again, Fake(())) == second  # type: ignore[arg-type]
