"""Redundant, shadowed and broad rules: hand-built policy sets with exact findings."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import flow_row, make_table

from recommender import read_flows, recommend
from recommender.cli import main
from recommender.evaluation.replay import replay
from recommender.evaluation.rule_analysis import RuleFinding, find_broad_rules, find_redundant_rules
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"

API = LabelSelector.of({"app": "api"})
WEB = Peer("pods", pod_selector=LabelSelector.of({"app": "web"}))
TCP80 = PortSpec("TCP", 80)
TCP443 = PortSpec("TCP", 443)


def ingress(*rules: Rule, name: str = "api", selector: LabelSelector = API, ns: str = "shop"):
    return Policy(name, ns, selector, ("ingress",), ingress=rules)


def rule(*peers: Peer, ports: tuple[PortSpec, ...] = (TCP80,)) -> Rule:
    return Rule("ingress", peers, ports)


def cidr(block: str, *excepts: str) -> Peer:
    return Peer("cidr", cidr=block, except_=excepts)


def redundant(*policies: Policy) -> list[tuple[str, str, int, str, str | None]]:
    return [
        (f.policy, f.direction, f.rule_index, f.kind, f.covered_by)
        for f in find_redundant_rules(PolicySet(policies))
    ]


def broad(*policies: Policy) -> list[tuple[str, int, str]]:
    return [(f.policy, f.rule_index, f.reason) for f in find_broad_rules(PolicySet(policies))]


# ------------------------------------------------------------------ redundant


def test_duplicate_rule_is_redundant_once():
    assert redundant(ingress(rule(WEB), rule(WEB))) == [
        ("shop/api", "ingress", 1, "redundant", "shop/api ingress rule 0")
    ]
    # Three copies: the two later ones go, both covered by the one kept.
    assert redundant(ingress(rule(WEB), rule(WEB), rule(WEB))) == [
        ("shop/api", "ingress", 1, "redundant", "shop/api ingress rule 0"),
        ("shop/api", "ingress", 2, "redundant", "shop/api ingress rule 0"),
    ]


def test_port_subset():
    wide = rule(WEB, ports=(TCP80, TCP443))
    assert redundant(ingress(rule(WEB, ports=(TCP443,)), wide)) == [
        ("shop/api", "ingress", 0, "redundant", "shop/api ingress rule 1")
    ]
    # Another protocol, or a port outside the range, is not covered.
    assert redundant(ingress(rule(WEB, ports=(PortSpec("UDP", 443),)), wide)) == []
    ranged = rule(WEB, ports=(PortSpec("TCP", 8000, 8100),))
    assert redundant(ingress(rule(WEB, ports=(PortSpec("TCP", 8080),)), ranged))[0][2] == 0
    assert redundant(ingress(rule(WEB, ports=(PortSpec("TCP", 8050, 8200),)), ranged)) == []
    # A rule without ports allows every port: it covers any port, and only it covers it.
    assert redundant(ingress(rule(WEB, ports=()), rule(WEB, ports=(TCP80,)))) == [
        ("shop/api", "ingress", 1, "redundant", "shop/api ingress rule 0")
    ]
    every_tcp = rule(WEB, ports=(PortSpec("TCP"),))
    assert redundant(ingress(rule(WEB, ports=()), every_tcp)) == [
        ("shop/api", "ingress", 1, "redundant", "shop/api ingress rule 0")
    ]
    # Named ports: covered by the same name or by every port of the protocol.
    named = rule(WEB, ports=(PortSpec("TCP", name="http"),))
    assert redundant(ingress(named, every_tcp))[0][2] == 0
    assert redundant(ingress(named, rule(WEB, ports=(TCP80,)))) == []


def test_cidr_subset():
    assert redundant(ingress(rule(cidr("10.1.2.0/24")), rule(cidr("10.0.0.0/8")))) == [
        ("shop/api", "ingress", 0, "redundant", "shop/api ingress rule 1")
    ]
    assert redundant(ingress(rule(cidr("10.0.0.0/8")), rule(cidr("10.1.2.0/24")))) == [
        ("shop/api", "ingress", 1, "redundant", "shop/api ingress rule 0")
    ]
    # An except of the wider block that cuts into the narrower one: not covered ...
    holed = rule(cidr("10.0.0.0/8", "10.1.2.128/25"))
    assert redundant(ingress(rule(cidr("10.1.2.0/24")), holed)) == []
    # ... unless the narrower one excepts it too; an except elsewhere does not matter.
    assert redundant(ingress(rule(cidr("10.1.2.0/24", "10.1.2.128/26")), holed)) == []
    assert redundant(ingress(rule(cidr("10.1.2.0/24", "10.1.2.0/25")), holed)) == []
    assert redundant(ingress(rule(cidr("10.1.2.0/24", "10.1.2.128/25")), holed))[0][2] == 0
    assert redundant(ingress(rule(cidr("10.9.0.0/16")), holed))[0][2] == 0
    # IPv6 against IPv4: never.
    assert redundant(ingress(rule(cidr("2001:db8::/64")), rule(cidr("0.0.0.0/0")))) == []
    # A pods peer is never covered by a CIDR (ipBlocks do not match pods).
    assert redundant(ingress(rule(WEB), rule(cidr("0.0.0.0/0")))) == []


def test_peer_and_selector_containment():
    every_pod = Peer("pods", pod_selector=LabelSelector())
    own_ns = Peer(
        "pods",
        namespace_selector=LabelSelector.of({"kubernetes.io/metadata.name": "shop"}),
        pod_selector=LabelSelector.of({"app": "web"}),
    )
    anywhere = Peer("pods", namespace_selector=LabelSelector())
    # Empty pod selector covers every pod of the namespace; namespaceSelector None is the
    # policy's namespace, the same as selecting it by name.
    assert redundant(ingress(rule(WEB), rule(every_pod)))[0][:3] == ("shop/api", "ingress", 0)
    assert redundant(ingress(rule(own_ns), rule(WEB))) == [  # equal: the later one goes
        ("shop/api", "ingress", 1, "redundant", "shop/api ingress rule 0")
    ]
    assert redundant(ingress(rule(WEB), rule(own_ns)))[0][2] == 1
    assert redundant(ingress(rule(WEB), rule(anywhere)))[0][2] == 0
    # The narrower rule goes, whichever comes first; the wider one stays.
    assert [f[2] for f in redundant(ingress(rule(anywhere), rule(WEB)))] == [1]
    # A rule without peers allows every peer and is only covered by another such rule.
    assert [f[2] for f in redundant(ingress(rule(), rule(WEB)))] == [1]
    assert [f[2] for f in redundant(ingress(rule(), rule(anywhere, cidr("0.0.0.0/0"))))] == [1]
    assert redundant(ingress(rule(WEB), rule()))[0][2] == 0
    # Peers covered by two different rules: redundant, covered by both.
    db = Peer("pods", pod_selector=LabelSelector.of({"app": "db"}))
    assert redundant(ingress(rule(WEB), rule(db), rule(WEB, db))) == [
        ("shop/api", "ingress", 2, "redundant", "shop/api ingress rule 0, shop/api ingress rule 1")
    ]
    # Checked last first: here the two narrow rules go, both covered by the wide one.
    assert [f[2] for f in redundant(ingress(rule(WEB, db), rule(WEB), rule(db)))] == [1, 2]


def test_policy_selectors_namespaces_and_directions():
    narrow = LabelSelector.of({"app": "api", "tier": "be"})
    # A policy selecting more pods (a subset of the labels) covers one selecting fewer.
    assert redundant(
        ingress(rule(WEB), name="all-api"), ingress(rule(WEB), name="be", selector=narrow)
    ) == [("shop/be", "ingress", 0, "redundant", "shop/all-api ingress rule 0")]
    # Not the other way round, not with expressions, not across namespaces.
    assert (
        redundant(
            ingress(rule(WEB, ports=(TCP80, TCP443)), name="be", selector=narrow),
            ingress(rule(WEB)),
        )
        == []
    )
    assert redundant(ingress(rule(WEB), ns="shop"), ingress(rule(WEB), ns="other")) == []
    # An egress rule never covers an ingress rule; rules of a direction the policy does not
    # isolate are ignored.
    egress = Policy("api-out", "shop", API, ("egress",), egress=(Rule("egress", (WEB,), (TCP80,)),))
    assert redundant(ingress(rule(WEB)), egress) == []
    loose = Policy("loose", "shop", API, ("egress",), ingress=(rule(WEB),))
    assert redundant(ingress(rule(WEB)), loose) == []


def test_expression_selectors_are_not_guessed():
    expr = LabelSelector((), (("app", "In", ("api",)),))
    # {app In (api)} selects exactly what app=api selects, but only identical expressions count.
    assert (
        redundant(ingress(rule(WEB), name="a", selector=expr), ingress(rule(WEB), name="b")) == []
    )
    assert redundant(
        ingress(rule(WEB), name="a", selector=expr), ingress(rule(WEB), name="b", selector=expr)
    ) == [("shop/b", "ingress", 0, "redundant", "shop/a ingress rule 0")]


def test_to_dict():
    finding = find_redundant_rules(PolicySet((ingress(rule(WEB), rule(WEB)),)))[0]
    assert finding.to_dict() == {
        "allowed": None,
        "covered_by": "shop/api ingress rule 0",
        "direction": "ingress",
        "kind": "redundant",
        "policy": "shop/api",
        "reason": "everything it allows is also allowed by shop/api ingress rule 0",
        "rule": 1,
        "used": None,
        "utilisation": None,
    }


# ------------------------------------------------------------------ broad


def test_allow_all_rule_is_broad():
    assert broad(ingress(Rule("ingress", ()))) == [
        ("shop/api", 0, "every source (no peers); every port of every protocol (no ports)")
    ]
    out = Policy("out", "shop", API, ("egress",), egress=(Rule("egress", ()),))
    assert broad(out)[0][2].startswith("every destination (no peers)")


def test_cidr_prefixes():
    assert broad(ingress(rule(cidr("10.0.0.0/8")))) == [
        ("shop/api", 0, "CIDR 10.0.0.0/8 (/8: 16,777,216 addresses)")
    ]
    assert broad(ingress(rule(cidr("10.1.0.0/16"))))[0][2].startswith("CIDR 10.1.0.0/16")
    assert broad(ingress(rule(cidr("10.1.0.0/17")))) == []
    assert broad(ingress(rule(cidr("0.0.0.0/0", "10.0.0.0/8")))) == [
        ("shop/api", 0, "CIDR 0.0.0.0/0 except 10.0.0.0/8 (/0: 4,294,967,296 addresses)")
    ]
    assert broad(ingress(rule(cidr("2001:db8::/48"))))[0][2].startswith("CIDR 2001:db8::/48")
    assert broad(ingress(rule(cidr("2001:db8::/49")))) == []


def test_wide_pod_peers_and_ports():
    assert broad(ingress(rule(Peer("pods", pod_selector=LabelSelector())))) == [
        ("shop/api", 0, "every pod of namespace shop")
    ]
    assert broad(ingress(rule(Peer("pods", namespace_selector=LabelSelector())))) == [
        ("shop/api", 0, "every pod in every namespace")
    ]
    in_all = Peer("pods", LabelSelector(), LabelSelector.of({"app": "web"}))
    assert broad(ingress(rule(in_all))) == [("shop/api", 0, "pods app=web in every namespace")]
    team = Peer("pods", LabelSelector.of({"team": "a"}))
    assert broad(ingress(rule(team))) == [("shop/api", 0, "every pod of the namespaces team=a")]
    assert broad(ingress(rule(WEB))) == []
    assert broad(ingress(rule(WEB, ports=(PortSpec("TCP", 1000, 1100),)))) == [
        ("shop/api", 0, "TCP ports 1000-1100 (101 ports)")
    ]
    assert broad(ingress(rule(WEB, ports=(PortSpec("TCP", 1000, 1099),)))) == []
    assert broad(ingress(rule(WEB, ports=(PortSpec("UDP"),)))) == [
        ("shop/api", 0, "every UDP port")
    ]


# ------------------------------------------------------------------ with a replay


def _web_to_api(ports: list[int], workloads: int = 0) -> list[dict]:
    """web -> api on each port (2 connections each), plus ``workloads`` idle web-like pods."""
    rows = []
    for i, port in enumerate(ports):
        for j in range(2):
            rows.append(
                flow_row(
                    src_namespace="shop",
                    src_workload="web",
                    src_ip="10.0.0.1",
                    src_port=40000 + 10 * i + j,
                    dst_namespace="shop",
                    dst_workload="api",
                    dst_ip="10.0.0.2",
                    dst_port=port,
                )
            )
    for k in range(workloads):
        # Other workloads labelled role=client, talking to a third workload only.
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload=f"client{k}",
                src_labels={"app": f"client{k}", "role": "client"},
                src_ip=f"10.0.1.{k + 1}",
                src_port=41000 + k,
                dst_namespace="shop",
                dst_workload="cache",
                dst_ip="10.0.0.9",
                dst_port=6379,
            )
        )
    return rows


def test_shadowed_and_redundant_with_a_replay():
    table = make_table(_web_to_api([8080]))
    wide = rule(WEB, ports=(PortSpec("TCP", 8000, 8099),))
    narrow = rule(WEB, ports=(PortSpec("TCP", 8090),))
    policies = PolicySet((ingress(wide, rule(WEB, ports=(PortSpec("TCP", 8080),)), narrow),))
    coverage = replay(policies, table)
    assert coverage.coverage == 1.0
    assert [(f.rule_index, f.kind, f.covered_by) for f in coverage.redundant_rules] == [
        (1, "redundant", "shop/api ingress rule 0"),  # carried traffic (8080)
        (2, "shadowed", "shop/api ingress rule 0"),  # 8090: never matched
    ]
    assert "changes nothing observed" in coverage.redundant_rules[1].reason
    # Without the replay both are merely redundant.
    assert [f.kind for f in find_redundant_rules(policies)] == ["redundant", "redundant"]
    # Duplicates that both carry traffic are redundant, not shadowed.
    same = PortSpec("TCP", 8080)
    dup = replay(PolicySet((ingress(rule(WEB, ports=(same,)), rule(WEB, ports=(same,))),)), table)
    assert [(f.rule_index, f.kind) for f in dup.redundant_rules] == [(1, "redundant")]
    data = dup.to_dict()
    assert data["redundant_rules"][0]["kind"] == "redundant"
    assert data["broad_rules"] == []


def test_utilisation_one_port_of_three():
    table = make_table(_web_to_api([8080]))
    three = rule(WEB, ports=(PortSpec("TCP", 8080), PortSpec("TCP", 8081), PortSpec("TCP", 8082)))
    coverage = replay(PolicySet((ingress(three),)), table)
    assert coverage.coverage == 1.0
    [finding] = coverage.broad_rules
    assert (finding.policy, finding.rule_index, finding.kind) == ("shop/api", 0, "broad")
    assert (finding.used, finding.allowed) == (1, 3)
    assert finding.utilisation == pytest.approx(1 / 3)
    assert finding.reason.startswith("utilisation 1/3: ")
    assert "(1 observed peers x 3 ports)" in finding.reason
    assert coverage.to_dict()["broad_rules"][0]["utilisation"] == pytest.approx(1 / 3)
    # Two ports of three used: 2/3 is above the default threshold of 1/2.
    used_two = replay(PolicySet((ingress(three),)), make_table(_web_to_api([8080, 8082])))
    assert used_two.broad_rules == ()
    assert find_broad_rules(PolicySet((ingress(three),)), used_two, min_utilisation=0.9) == [
        RuleFinding(
            "shop/api",
            "ingress",
            0,
            "broad",
            "utilisation 2/3: 2 of the 3 (peer x port) pairs it allows (1 observed peers x "
            "3 ports) carried traffic",
            None,
            2,
            3,
        )
    ]


def test_utilisation_counts_observed_workloads_times_ports():
    # web plus 9 role=client workloads observed; the rule allows app=web or role=client on
    # 5 ports; web used 2 of them: 2 / (10 x 5).
    table = make_table(_web_to_api([8080, 8081], workloads=9))
    clients = Peer("pods", pod_selector=LabelSelector.of({"role": "client"}))
    ports = tuple(PortSpec("TCP", p) for p in range(8080, 8085))
    coverage = replay(PolicySet((ingress(rule(WEB, clients, ports=ports)),)), table)
    [finding] = coverage.broad_rules
    assert (finding.used, finding.allowed) == (2, 50)
    assert "(10 observed peers x 5 ports)" in finding.reason
    # A structural finding carries the utilisation too; an unused rule gets no utilisation one.
    everyone = replay(PolicySet((ingress(Rule("ingress", ())),)), table)
    [finding] = everyone.broad_rules
    assert finding.reason.startswith("every source (no peers); every port of every protocol")
    assert len(everyone.cluster.pods) == 12  # web, api, cache, 9 clients
    assert finding.used == 2 and finding.allowed == 12 * 3 * 65535
    idle = ingress(rule(WEB, ports=ports), name="idle", selector=LabelSelector.of({"app": "x"}))
    assert replay(PolicySet((idle,)), table).broad_rules == ()


# ------------------------------------------------------------------ recommended policies


@pytest.mark.parametrize("name", ["flows.parquet", "hubble.jsonl.gz", "calico.jsonl.gz"])
def test_recommended_policies_have_no_redundant_and_only_flagged_broad_rules(name):
    table = read_flows(SAMPLES / name)
    rec = recommend(table)
    coverage = replay(rec.policy_set, rec.tables)
    assert coverage.redundant_rules == ()
    assert find_redundant_rules(rec.policy_set) == []
    flagged = {
        (f"{f['namespace']}/{f['policy']}", f["direction"])
        for f in rec.report["flagged"]
        if any(flag.startswith(("broad:", "all-ports")) for flag in f["flags"])
    }
    found = {(f.policy, f.direction) for f in coverage.broad_rules}
    assert found == flagged
    assert {(f.policy, f.direction) for f in find_broad_rules(rec.policy_set)} == flagged
    if name == "calico.jsonl.gz":
        # Calico's aggregated pub/pvt records become private-range and 0.0.0.0/0 peers.
        assert len(coverage.broad_rules) == 8
        assert all("CIDR" in f.reason for f in coverage.broad_rules)
    else:
        assert coverage.broad_rules == ()


# ------------------------------------------------------------------ the command


def test_cli_evaluate_shows_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    flows = tmp_path / "flows.parquet"
    pq.write_table(make_table(_web_to_api([8080])), flows)
    (tmp_path / "policy.yaml").write_text(
        """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: TCP, port: 8080}, {protocol: TCP, port: 8081}, {protocol: TCP, port: 8082}]
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: TCP, port: 8081}]
  - from: [{ipBlock: {cidr: 10.0.0.0/8}}]
"""
    )
    assert main(["evaluate", str(tmp_path / "policy.yaml"), str(flows)]) == 0
    out = capsys.readouterr().out
    assert "redundant rules: 1 (1 shadowed" in out
    assert (
        "  shop/api ingress rule 1 [shadowed]: everything it allows is also allowed by "
        "shop/api ingress rule 0" in out
    )
    assert "broad rules: 2" in out
    assert "  shop/api ingress rule 0 (utilisation 1/3): utilisation 1/3" in out
    assert "  shop/api ingress rule 2 (utilisation 0/0): CIDR 10.0.0.0/8" not in out
    assert "  shop/api ingress rule 2: CIDR 10.0.0.0/8 (/8: 16,777,216 addresses)" in out

    assert main(["evaluate", str(tmp_path / "policy.yaml"), str(flows), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(f["rule"], f["kind"]) for f in data["redundant_rules"]] == [(1, "shadowed")]
    assert [(f["rule"], f["used"], f["allowed"]) for f in data["broad_rules"]] == [
        (0, 1, 3),
        (2, 0, 0),
    ]
