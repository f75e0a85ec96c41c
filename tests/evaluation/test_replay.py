"""Replaying flows against policies: coverage, false denies, over-permissiveness, unused rules."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
from conftest import flow_row, make_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import read_flows, recommend
from recommender.cli import main
from recommender.evaluation.replay import NODE_LOCAL, cluster_from_flows, replay
from recommender.policy.model import LabelSelector, Policy, PolicySet, Rule

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"


@pytest.fixture(scope="module")
def hubble_table():
    return read_flows(SAMPLES / "hubble.jsonl.gz")


def shop_rows() -> list[dict]:
    """web -> api:8080 (5), api -> db:5432 (3), api -> coredns UDP/53 (2), one denied web -> db."""
    rows = []
    for i in range(5):
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload="web",
                src_ip="10.0.0.1",
                src_port=40000 + i,
                dst_namespace="shop",
                dst_workload="api",
                dst_ip="10.0.0.2",
                dst_port=8080,
            )
        )
    for i in range(3):
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload="api",
                src_ip="10.0.0.2",
                src_port=41000 + i,
                dst_namespace="shop",
                dst_workload="db",
                dst_ip="10.0.0.3",
                dst_port=5432,
            )
        )
    for i in range(2):
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload="api",
                src_ip="10.0.0.2",
                src_port=42000 + i,
                protocol="UDP",
                dst_namespace="kube-system",
                dst_workload="coredns",
                dst_labels={"k8s-app": "kube-dns"},
                dst_ip="10.0.9.9",
                dst_port=53,
            )
        )
    rows.append(
        flow_row(
            src_namespace="shop",
            src_workload="web",
            src_ip="10.0.0.1",
            src_port=43000,
            dst_namespace="shop",
            dst_workload="db",
            dst_ip="10.0.0.3",
            dst_port=5432,
            verdict="denied",
        )
    )
    return rows


def _deny_all(namespaces) -> PolicySet:
    return PolicySet(tuple(Policy("deny", ns, LabelSelector()) for ns in namespaces))


def _allow_all(namespaces) -> PolicySet:
    return PolicySet(
        tuple(
            Policy(
                "allow",
                ns,
                LabelSelector(),
                ingress=(Rule("ingress", ()),),
                egress=(Rule("egress", ()),),
            )
            for ns in namespaces
        )
    )


# ------------------------------------------------------------------ the recommended policies


@pytest.mark.parametrize("name", ["flows.parquet", "hubble.jsonl.gz"])
def test_recommended_policies_cover_their_evidence(name):
    table = read_flows(SAMPLES / name)
    rec = recommend(table)
    coverage = replay(rec.policy_set, table)
    assert coverage.coverage == 1.0
    assert coverage.false_denies == ()
    assert coverage.observed_edges == rec.edges.num_rows
    assert coverage.allowed_connections == coverage.observed_connections > 0
    assert coverage.unused_rules == ()
    assert coverage.denied_but_allowed == ()
    assert coverage.over_permissive.allowed_unobserved == 0
    assert coverage.redundant_rules == coverage.broad_rules == ()
    assert coverage.to_dict()["redundant_rules"] == coverage.to_dict()["broad_rules"] == []
    assert any(NODE_LOCAL in note for note in coverage.notes)
    # Replaying the aggregation the recommendation used gives the same answer.
    assert replay(rec.policy_set, rec.tables) == coverage


def test_recommended_policies_cover_bookinfo(shared: Path):
    table = read_flows(shared / "datasets/hubble-otel-testdata")
    rec = recommend(table)
    coverage = replay(rec.policy_set, rec.tables)
    assert coverage.coverage == 1.0
    assert coverage.false_denies == ()
    assert coverage.observed_edges > 0
    # ICMP and node addresses are counted with a reason, never dropped.
    reasons = coverage.not_evaluated_by_reason()
    assert any("ICMP" in r for r in reasons)
    assert coverage.observed_edges + len(coverage.not_evaluated) == rec.edges.num_rows


def test_removing_one_rule_gives_exactly_its_false_denies():
    table = make_table(shop_rows())
    rec = recommend(table)
    policies = {(p.namespace, p.name): p for p in rec.policy_set.policies}
    api = policies[("shop", "allow-api")]
    assert len(api.ingress) == 1
    changed = dataclasses.replace(api, ingress=())
    policy_set = PolicySet(tuple(changed if p is api else p for p in rec.policy_set.policies))
    coverage = replay(policy_set, table)
    assert [
        (e.source, e.destination, e.protocol, e.port, e.connections) for e in coverage.false_denies
    ] == [("shop/web", "shop/api", "TCP", 8080, 5)]
    assert coverage.false_denies[0].reason.startswith("ingress: isolated by shop/allow-api")
    assert coverage.allowed_connections == 5  # api -> db (3) and api -> coredns (2)
    assert coverage.observed_connections == 10
    assert coverage.coverage == 0.5
    # web's egress rule to api still matches the (now denied) edge, so it counts as used.
    assert coverage.unused_rules == ()


def test_unused_rule_is_listed():
    table = make_table(shop_rows())
    rec = recommend(table)
    extra = Policy(
        "extra",
        "shop",
        LabelSelector.of({"app": "db"}),
        ("ingress",),
        ingress=(Rule("ingress", ()),),
    )
    coverage = replay(PolicySet((*rec.policy_set.policies, extra)), table)
    assert coverage.unused_rules == ()  # the extra rule matches api -> db
    never = Policy(
        "never",
        "shop",
        LabelSelector.of({"app": "nobody"}),
        ("ingress",),
        ingress=(Rule("ingress", ()),),
    )
    coverage = replay(PolicySet((*rec.policy_set.policies, never)), table)
    assert coverage.unused_rules == (
        {"direction": "ingress", "peers": 0, "policy": "shop/never", "ports": 0, "rule": 0},
    )
    assert coverage.rules == sum(len(p.rules) for p in rec.policy_set.policies) + 1


def test_default_deny_only_covers_nothing_and_lists_every_edge():
    table = make_table(shop_rows())
    coverage = replay(_deny_all(["shop", "kube-system"]), table)
    assert coverage.coverage == 0.0
    assert coverage.allowed_connections == 0
    assert len(coverage.false_denies) == coverage.observed_edges == 3
    assert [e.connections for e in coverage.false_denies] == [5, 3, 2]
    assert coverage.over_permissive.allowed_unobserved == 0
    assert coverage.denied_but_allowed == ()


def test_default_deny_only_on_hubble_lists_every_judged_edge(hubble_table):
    namespaces = sorted(
        {ns for ns in hubble_table["src_namespace"].to_pylist() if ns}
        | {ns for ns in hubble_table["dst_namespace"].to_pylist() if ns}
    )
    coverage = replay(_deny_all(namespaces), hubble_table)
    # Only node-local traffic (host -> pod) stays allowed.
    assert len(coverage.false_denies) == coverage.observed_edges - coverage.allowed_edges
    assert coverage.allowed_edges == 14
    assert coverage.coverage < 0.2


def test_allow_all_covers_everything_and_is_over_permissive(hubble_table):
    namespaces = sorted({ns for ns in hubble_table["dst_namespace"].to_pylist() if ns})
    coverage = replay(_allow_all(namespaces), hubble_table)
    assert coverage.coverage == 1.0
    assert coverage.false_denies == ()
    over = coverage.over_permissive
    assert over.allowed_unobserved == over.candidates - over.observed
    assert over.allowed_unobserved > 10 * over.observed
    assert over.rate == 1.0
    # Every denied edge between pods is now allowed.
    assert len(coverage.denied_but_allowed) == coverage.denied_edges > 0


def test_denied_flow_allowed_by_a_policy_is_reported():
    table = make_table(shop_rows())
    rec = recommend(table)
    assert replay(rec.policy_set, table).denied_but_allowed == ()
    db_ingress = Policy(
        "db-from-web",
        "shop",
        LabelSelector.of({"app": "db"}),
        ("ingress",),
        ingress=(Rule("ingress", ()),),
    )
    web_egress = Policy(
        "web-out",
        "shop",
        LabelSelector.of({"app": "web"}),
        ("egress",),
        egress=(Rule("egress", ()),),
    )
    coverage = replay(PolicySet((*rec.policy_set.policies, db_ingress, web_egress)), table)
    assert [(e.source, e.destination, e.port) for e in coverage.denied_but_allowed] == [
        ("shop/web", "shop/db", 5432)
    ]
    assert "shop/db-from-web" in coverage.denied_but_allowed[0].reason


def test_cluster_from_flows_and_unjudgeable_edges():
    rows = [
        flow_row(
            src_namespace="shop",
            src_workload="web",
            src_pod="web-1",
            src_labels={"app": "web", "pod-template-hash": "a"},
            dst_namespace="shop",
            dst_workload="web",
            dst_pod="web-2",
            dst_ip="10.0.0.2",
            src_ip="10.0.0.1",
            dst_labels={"app": "web", "pod-template-hash": "b"},
            dst_port=7000,
        ),
        flow_row(
            src_namespace="shop",
            src_workload="web",
            src_ip="10.0.0.1",
            dst_namespace="shop",
            dst_workload="db",
            dst_ip="10.0.0.3",
            protocol="ICMP",
        ),
        flow_row(
            src_namespace="shop",
            src_workload="web",
            src_ip="10.0.0.1",
            dst_kind="remote-node",
            dst_ip="172.18.0.3",
            dst_port=10250,
        ),
    ]
    table = make_table(rows)
    cluster = cluster_from_flows(table)
    assert {p.key: dict(p.labels) for p in cluster.pods} == {
        "shop/web": {"app": "web"},
        "shop/db": {"app": "db"},
    }
    assert cluster.namespaces["shop"].labels == {"kubernetes.io/metadata.name": "shop"}
    coverage = replay(_deny_all(["shop"]), table)
    # Two pods of one workload are not loopback: the deny applies.
    assert [(e.source, e.destination) for e in coverage.false_denies] == [("shop/web", "shop/web")]
    reasons = coverage.not_evaluated_by_reason()
    assert sorted(reasons) == [
        "node address: whether an ipBlock matches a node is up to the CNI",
        "protocol ICMP: Kubernetes NetworkPolicy matches only TCP, UDP, SCTP",
    ]
    data = coverage.to_dict()
    assert json.loads(json.dumps(data, sort_keys=True, default=str)) == data


# ------------------------------------------------------------------ random flow tables

NAMESPACES = ("alpha", "beta")
PORTS = (80, 443, 5432)


@st.composite
def flow_tables(draw):
    n = draw(st.integers(2, 5))
    workloads = []
    for i in range(n):
        labels = {"app": f"w{i}"}
        if draw(st.booleans()):
            labels["tier"] = draw(st.sampled_from(["front", "back"]))
        workloads.append((draw(st.sampled_from(NAMESPACES)), f"w{i}", labels))
    pairs = list(itertools.product(range(n), repeat=2))
    edges = draw(
        st.lists(
            st.tuples(
                st.sampled_from(pairs),
                st.sampled_from(("TCP", "UDP")),
                st.sampled_from(PORTS),
                st.sampled_from(("allowed", "denied")),
                st.integers(1, 3),
            ),
            min_size=1,
            max_size=10,
        )
    )
    rows = []
    for k, ((a, b), proto, port, verdict, count) in enumerate(edges):
        (ns_a, name_a, labels_a), (ns_b, name_b, labels_b) = workloads[a], workloads[b]
        rows.append(
            flow_row(
                src_namespace=ns_a,
                src_workload=name_a,
                src_labels=labels_a,
                src_ip=f"10.1.0.{a + 1}",
                src_port=40000 + k,
                dst_namespace=ns_b,
                dst_workload=name_b,
                dst_labels=labels_b,
                dst_ip=f"10.1.{int(a == b)}.{b + 1}",
                dst_port=port,
                protocol=proto,
                verdict=verdict,
                connections=count,
            )
        )
    return make_table(rows)


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(flow_tables())
def test_recommended_policies_always_cover_their_flows(table):
    rec = recommend(table)
    coverage = replay(rec.policy_set, rec.tables)
    assert coverage.coverage == 1.0
    assert coverage.false_denies == ()
    assert coverage.unused_rules == ()


# ------------------------------------------------------------------ the command


def test_cli_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    flows = str(SAMPLES / "hubble.jsonl.gz")
    recommend(flows).write(tmp_path / "out")
    assert main(["evaluate", str(tmp_path / "out"), flows]) == 0
    out = capsys.readouterr().out
    assert "coverage: 100.00%" in out
    assert "false denies: 0 edges" in out

    assert main(["evaluate", str(tmp_path / "out"), flows, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["coverage"] == 1.0
    assert data["false_denies"] == []

    (tmp_path / "out/shop/allow-cart.yaml").unlink()
    assert main(["evaluate", str(tmp_path / "out"), flows]) == 1
    out = capsys.readouterr().out
    assert "false denies: " in out and "shop/cart" in out
    assert main(["evaluate", str(tmp_path / "out"), flows, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["coverage"] < 1.0
    assert all("shop/cart" in (e["source"], e["destination"]) for e in data["false_denies"])


@pytest.mark.parametrize(
    "manifest",
    [
        # Calico is evaluated (issue 18), but not a selector Calico would reject
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: x}\n"
        "spec: {selector: a == b}\n",
        # nor source ports the flows cannot tell (part of the ephemeral range)
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: x}\n"
        "spec: {egress: [{action: Allow, protocol: TCP, source: {ports: ['40000:50000']}}]}\n",
        # a policy kind of no dialect the evaluator knows
        "apiVersion: crd.antrea.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {}\n",
    ],
)
def test_cli_evaluate_bad_policies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: str
) -> None:
    (tmp_path / "policy.yaml").write_text(manifest)
    status = main(["evaluate", str(tmp_path / "policy.yaml"), str(SAMPLES / "flows.parquet")])
    assert status == 2
    assert capsys.readouterr().err.startswith("error: ")
