"""Random Kubernetes-model policy sets rendered to Calico and Cilium (the writers `recommend -d`
uses) and read back by the evaluator give the Kubernetes evaluator's verdict on every pod pair,
outside address and port: the readers, Felix's rule semantics and Cilium's default deny agree
with NetworkPolicy semantics where the writers promise they do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from evaluation.test_evaluator import EXTERNAL, QUERIES, policy_sets, random_topology
from hypothesis import HealthCheck, given, settings

from recommender.errors import SynthesisError
from recommender.evaluation.evaluator import Cluster, evaluate
from recommender.evaluation.stack import read_policy_tree
from recommender.policy.calico import CalicoOptions, render_calico
from recommender.policy.cilium import render_cilium
from recommender.policy.model import PolicySet


def _verdicts(judge: Any, cluster: Cluster) -> dict[tuple[str, str, str, int], bool]:
    endpoints = [p.key for p in cluster.pods]
    pairs = [(s, d) for s in endpoints for d in endpoints if s != d]
    pairs += [(p, ip) for p in endpoints for ip in EXTERNAL]
    pairs += [(ip, p) for p in endpoints for ip in EXTERNAL]
    return {
        (s, d, proto, port): judge(s, d, proto, port)
        for s, d in pairs for proto, port in QUERIES
    }


@pytest.mark.parametrize("dialect", ["calico", "cilium"])
@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(policy_set=policy_sets())
def test_rendered_trees_judged_like_networkpolicies(
    tmp_path_factory: pytest.TempPathFactory, dialect: str, policy_set: PolicySet
) -> None:
    cluster = Cluster.from_manifests(random_topology())
    try:
        docs = (
            render_calico(policy_set, CalicoOptions(tier=None)) if dialect == "calico"
            else render_cilium(policy_set)
        )
    except SynthesisError:
        return
    folder: Path = tmp_path_factory.mktemp(dialect)
    (folder / "tree.yaml").write_text(yaml.safe_dump_all(json.loads(json.dumps(docs))))
    tree = read_policy_tree(folder)
    expected = _verdicts(
        lambda s, d, proto, port: evaluate(policy_set, cluster, s, d, proto, port).allowed,
        cluster,
    )
    got = _verdicts(
        lambda s, d, proto, port: tree.verdict(cluster, s, d, proto, port).allowed, cluster
    )
    differ = {k: v for k, v in got.items() if expected[k] != v}
    assert not differ, (yaml.safe_dump_all(docs), sorted(differ.items())[:10])
