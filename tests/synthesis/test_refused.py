"""The refused set (issue 21, part 5): both ends' views of a refused edge, reasons, unions,
and the matching synthesis relies on."""

from __future__ import annotations

from conftest import flow_row, make_table

from recommender.aggregate.edges import aggregate_edges
from recommender.policy.model import LabelSelector, Peer, PortSpec
from recommender.synthesis.refused import Refused, RefusedSet


def _tables():
    rows = [
        flow_row(src_namespace="shop", src_workload="web", src_port=40000,
                 dst_namespace="shop", dst_workload="db", dst_port=5432, verdict="denied"),
        flow_row(src_kind="external", src_ip="81.2.69.7", src_port=40001,
                 dst_namespace="shop", dst_workload="web", dst_port=443, verdict="denied"),
        flow_row(src_kind="external", src_name="pub", src_port=40002,
                 dst_namespace="shop", dst_workload="web", dst_port=8443, verdict="denied"),
    ]  # fmt: skip
    return aggregate_edges(make_table(rows))


def test_a_denied_edge_is_refused_from_both_ends():
    refused = RefusedSet.from_tables(_tables())
    assert set(refused.items) == {
        Refused(("shop", "web"), "egress", ("shop", "db"), "TCP", 5432, "denied"),
        Refused(("shop", "db"), "ingress", ("shop", "web"), "TCP", 5432, "denied"),
        Refused(("shop", "web"), "ingress", "81.2.69.7", "TCP", 443, "denied"),
        Refused(("shop", "web"), "ingress", None, "TCP", 8443, "denied"),
    }
    assert len(refused) == 4


def test_matching_by_port_address_and_selector():
    refused = RefusedSet.from_tables(_tables()) | RefusedSet(
        [Refused(("shop", "web"), "egress", "9.9.9.9", "UDP", None, "failed")]
    )
    web = ("shop", "web")
    assert refused.addresses(web, "ingress", [PortSpec("TCP", 400, 500)]) == {"81.2.69.7"}
    assert refused.addresses(web, "ingress", [PortSpec("TCP", 80)]) == set()
    assert refused.unknown_peer(web, "ingress", [PortSpec("TCP", 8443)])
    assert not refused.unknown_peer(web, "ingress", [PortSpec("TCP", 443)])
    assert refused.addresses(web, "egress", [PortSpec("UDP", 53)]) == {"9.9.9.9"}  # no port
    labels = {("shop", "db"): [{"app": "db", "tier": "data"}]}
    tier = Peer("pods", pod_selector=LabelSelector.of({"tier": "data"}))
    other = Peer("pods", pod_selector=LabelSelector.of({"tier": "front"}))
    elsewhere = Peer(
        "pods",
        namespace_selector=LabelSelector.of({"kubernetes.io/metadata.name": "pay"}),
        pod_selector=LabelSelector.of({"tier": "data"}),
    )
    assert refused.admits(web, "egress", tier, PortSpec("TCP", 5000, 6000), labels)
    assert not refused.admits(web, "egress", tier, PortSpec("TCP", 80), labels)
    assert not refused.admits(web, "egress", other, PortSpec("TCP", 5432), labels)
    assert not refused.admits(web, "egress", elsewhere, PortSpec("TCP", 5432), labels)
    block = Peer("cidr", cidr="81.2.69.0/24")
    carved = Peer("cidr", cidr="81.2.69.0/24", except_=("81.2.69.7/32",))
    assert refused.admits(web, "ingress", block, PortSpec("TCP", 443), labels)
    assert not refused.admits(web, "ingress", carved, PortSpec("TCP", 443), labels)
    assert refused.blocked_ports(web, "egress", tier, "TCP", labels) == ([5432], False)
    assert refused.blocked_ports(web, "ingress", block, "TCP", labels) == ([443, 8443], False)


def test_an_edge_screening_excluded_is_never_widened_over():
    """Screening moves an edge to ``excluded`` (reason ``anomaly:...``): a CIDR budget that
    would cover its address is not spent there."""
    import dataclasses

    import pyarrow as pa

    from recommender import RecommendConfig
    from recommender.synthesis import synthesize

    rows = [
        flow_row(src_namespace="shop", src_workload="web", src_port=40000 + i,
                 dst_kind="external", dst_ip=ip, dst_port=443)
        for i, ip in enumerate(("8.8.8.8", "8.8.8.10", "8.8.8.11"))
    ]  # fmt: skip
    config = RecommendConfig(cidr_budget=1 << 16)
    tables = aggregate_edges(make_table(rows), config)
    wide, _ = synthesize(tables, config)
    assert [p.cidr for pol in wide.policies for r in pol.egress for p in r.peers] == [
        "8.8.8.8/30"
    ]
    ips = [row[0] for row in tables.edges.column("dst_ips").to_pylist()]
    keep = pa.array([ip != "8.8.8.10" for ip in ips])
    moved = tables.edges.filter(pa.compute.invert(keep))
    moved = moved.append_column("reason", pa.array(["anomaly:scan"], pa.string()))
    screened = dataclasses.replace(
        tables,
        edges=tables.edges.filter(keep),
        excluded=moved.select(tables.excluded.column_names).cast(tables.excluded.schema),
    )
    assert len(RefusedSet.from_tables(screened)) == 1
    held, _ = synthesize(screened, config)
    cidrs = [p.cidr for pol in held.policies for r in pol.egress for p in r.peers]
    assert cidrs == ["8.8.8.8/32", "8.8.8.11/32"]


def test_a_flow_a_guardrail_denies_is_never_widened_over(tmp_path):
    from recommender import recommend

    guard = tmp_path / "guardrails.yaml"
    guard.write_text(
        "guardrails:\n"
        "  - name: no-resolver\n"
        "    priority: 10\n"
        "    egress:\n"
        "      - action: deny\n"
        "        to:\n"
        "          - networks: [8.8.8.10/32]\n"
    )
    rows = [
        flow_row(src_namespace="shop", src_workload="web", src_port=40000 + i,
                 dst_kind="external", dst_ip=ip, dst_port=443)
        for i, ip in enumerate(("8.8.8.8", "8.8.8.10", "8.8.8.11"))
    ]  # fmt: skip
    free = recommend(make_table(rows), cidr_budget=1 << 16)
    assert [p.cidr for pol in free.policy_set.policies for r in pol.egress for p in r.peers] == [
        "8.8.8.8/30"
    ]
    held = recommend(make_table(rows), cidr_budget=1 << 16, guardrails=guard)
    cidrs = [p.cidr for pol in held.policy_set.policies for r in pol.egress for p in r.peers]
    assert cidrs == ["8.8.8.8/32", "8.8.8.11/32"]


def test_a_never_established_edge_is_never_widened_over():
    """Issue 21 part 1's never-established edges (every connection failed) land in
    ``excluded`` and so in the refused set: a CIDR budget does not reach them."""
    from recommender import recommend

    rows = [
        flow_row(src_namespace="shop", src_workload="web", src_port=40000 + i,
                 dst_kind="external", dst_ip=ip, dst_port=443, outcome=outcome)
        for i, (ip, outcome) in enumerate(
            (("8.8.8.8", "established"), ("8.8.8.10", "failed"), ("8.8.8.11", "established"))
        )
    ]  # fmt: skip
    rec = recommend(make_table(rows), cidr_budget=1 << 16)
    cidrs = [p.cidr for pol in rec.policy_set.policies for r in pol.egress for p in r.peers]
    assert cidrs == ["8.8.8.8/32", "8.8.8.11/32"]
    assert "never-established" in rec.tables.excluded.column("reason").to_pylist()
