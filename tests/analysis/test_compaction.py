"""Policy compaction widens nothing; the granularity report counts what coarser policies cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import flow_row, make_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import RecommendConfig, aggregate_edges, recommend, replay, synthesize
from recommender.evaluation.evaluator import evaluate
from recommender.evaluation.replay import cluster_from_flows
from recommender.synthesis.granularity import granularity_report


def edge(src: str, dst: str, port: int, n: int = 5, **labels: dict[str, str]) -> dict[str, Any]:
    row = flow_row(
        src_namespace="shop",
        src_workload=src,
        dst_namespace="shop",
        dst_workload=dst,
        dst_port=port,
        connections=n,
    )
    if src in labels:
        row["src_labels"] = labels[src]
    if dst in labels:
        row["dst_labels"] = labels[dst]
    return row


def apis(**labels: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for w in ("api-1", "api-2", "api-3"):
        rows.append(edge(w, "db", 5432, **labels))
        rows.append(edge("gw", w, 8080, **labels))
    rows.append(edge("api-3", "cache", 6379, **labels))
    return rows


def test_identical_workloads_share_one_policy_with_an_in_selector(shared: Path, tmp_path) -> None:
    table = make_table(apis())
    plain = recommend(table)
    rec = recommend(table, compact_policies=True)
    assert rec.findings.compaction == [
        {
            "namespace": "shop",
            "policy": "allow-group-api-1",
            "workloads": ["api-1", "api-2"],
            "selector": "app In (api-1,api-2)",
            "proof": "equivalent",
            "added_grants": 0,
        }
    ]
    names = [p.name for p in rec.policy_set.policies]
    assert "allow-group-api-1" in names and "allow-api-1" not in names and "allow-api-3" in names
    assert len(rec.policy_set) == len(plain.policy_set) - 1
    shared_policy = next(p for p in rec.policy_set.policies if p.name == "allow-group-api-1")
    manifest = next(m for m in rec.manifests() if m["metadata"]["name"] == "allow-group-api-1")
    assert manifest["spec"]["podSelector"] == {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["api-1", "api-2"]}]
    }
    assert shared_policy.egress[0].evidence.connections == 10  # both members' evidence
    assert rec.report["self_check"]["coverage"] == 1.0
    assert rec.report["self_check"]["false_denies"] == 0
    assert rec.report["compaction"] == rec.findings.compaction
    rules = {(r.policy, r.workload) for r in rec.findings.rules}
    assert ("allow-group-api-1", "api-1,api-2") in rules
    # Off by default; the manifests stay valid for the API server.
    assert plain.findings.compaction == []
    rec.write(tmp_path / "out")
    check = subprocess.run(
        [sys.executable, str(shared / "tools/validate_manifests.py"), "-q", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and "0 invalid" in check.stdout, check.stdout + check.stderr


def test_a_shared_label_is_checked_against_every_known_workload() -> None:
    labels = {
        "api-1": {"app.kubernetes.io/name": "api-1", "tier": "api"},
        "api-2": {"app": "api-2", "tier": "api"},
        "api-3": {"app": "api-3", "tier": "api"},
    }
    rows = apis(**labels)
    rec = recommend(make_table(rows), compact_policies=True)
    # api-3 (not a member: it also talks to the cache) carries tier=api too: refused.
    assert rec.findings.compaction == []
    labels["api-3"] = {"app": "api-3", "tier": "cache-client"}
    rec = recommend(make_table(apis(**labels)), compact_policies=True)
    assert [(c["selector"], c["proof"]) for c in rec.findings.compaction] == [
        ("tier=api", "known-workloads")
    ]
    assert rec.report["self_check"]["coverage"] == 1.0


def test_budget_merges_a_near_identical_cluster() -> None:
    rows = []
    for w in ("api-1", "api-2", "api-3", "api-4"):
        rows += [edge(w, "db", 5432), edge(w, "dns", 53), edge("gw", w, 8080)]
    rows.append(edge("api-4", "cache", 6379))
    table = make_table(rows)
    exact = recommend(table, compact_policies=True)
    assert [c["workloads"] for c in exact.findings.compaction] == [["api-1", "api-2", "api-3"]]
    # api-4's extra egress adds 3 grants to the others: within a budget of 3, not of 2.
    loose = recommend(table, compact_policies=True, compaction_budget=3)
    assert [(c["workloads"], c["added_grants"]) for c in loose.findings.compaction] == [
        (["api-1", "api-2", "api-3", "api-4"], 3)
    ]
    assert loose.report["self_check"]["coverage"] == 1.0
    tight = recommend(table, compact_policies=True, compaction_budget=2)
    assert tight.findings.compaction == exact.findings.compaction


def _allowed(policy_set: Any, tables: Any) -> set[tuple[str, str, str, int]]:
    """Every (source pod, destination pod, protocol, port) among known workloads it allows."""
    cluster = cluster_from_flows(tables)
    ports = {("TCP", int(p)) for p in tables.edges["dst_port"].to_pylist() if p is not None}
    out = set()
    for src in cluster.pods:
        for dst in cluster.pods:
            for proto, port in ports:
                if evaluate(policy_set, cluster, src, dst, proto, port).allowed:
                    out.add((src.key, dst.key, proto, port))
    return out


_WORKLOADS = [f"w{i}" for i in range(6)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(_WORKLOADS), st.sampled_from(_WORKLOADS), st.sampled_from(
            [80, 443, 5432])),
        min_size=1,
        max_size=12,
    ),
    st.dictionaries(st.sampled_from(_WORKLOADS), st.sampled_from(["a", "b"]), max_size=6),
    st.booleans(),
)
def test_compaction_widens_nothing(
    edges: list[tuple[str, str, int]], tiers: dict[str, str], mixed_keys: bool
) -> None:
    """Every observed allowed flow is still allowed and nothing new is allowed between known
    workloads: the compacted policies allow exactly what the per-workload ones do."""
    rows = []
    for src, dst, port in edges:
        if src == dst:
            continue
        row = edge(src, dst, port)
        for side, name in (("src", src), ("dst", dst)):
            key = "app.kubernetes.io/name" if mixed_keys and name in ("w1", "w3") else "app"
            labels = {key: name}
            if name in tiers:
                labels["tier"] = tiers[name]
            row[f"{side}_labels"] = labels
        rows.append(row)
    if not rows:
        return
    tables = aggregate_edges(make_table(rows))
    plain, _ = synthesize(tables)
    compacted, findings = synthesize(tables, RecommendConfig(compact_policies=True))
    coverage = replay(compacted, tables, synthetic_limit=0)
    assert coverage.coverage == 1.0 and not coverage.false_denies
    assert _allowed(compacted, tables) == _allowed(plain, tables)
    assert len(compacted) <= len(plain)
    for record in findings.compaction:
        assert record["added_grants"] == 0


def test_granularity_report_counts_policies_rules_and_unobserved_grants() -> None:
    rows = []
    for w in ("api-1", "api-2", "api-3"):
        rows += [edge(w, "db", 5432), edge("gw", w, 8080)]
    rows.append(edge("api-3", "cache", 6379))
    rec = recommend(make_table(rows))
    report = granularity_report(rec.findings, rec.tables)
    workload = report.level("workload")
    # Policies: api-1..3, gw, db, cache + one default deny. Rules: api-1/2: 2 each, api-3: 3
    # (egress db and cache have different ports), gw 1, db 1, cache 1.
    assert (workload.policies, workload.rules, workload.unobserved_grants) == (7, 10, 0)
    assert workload.observed_grants == 3 * 2 + 1 + 3 + 3 + 1
    namespace = report.level("namespace")
    assert namespace.policies == 2
    assert namespace.unobserved_grants > 0 and namespace.over_permissiveness > 0
    cluster = report.level("cluster")
    assert namespace.policies <= cluster.policies <= workload.policies
    assert 0 <= cluster.unobserved_grants <= namespace.unobserved_grants
    # In the report too, as a section.
    assert rec.report["granularity"] == report.to_dict()
    from recommender.report.model import report_markdown

    assert "## Granularity" in report_markdown(rec.report)
