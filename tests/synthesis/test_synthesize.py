"""Synthesis on small known graphs: exact policies (golden YAML) and the semantics that matter.

Regenerate the golden files with ``UPDATE_GOLDEN=1 python -m pytest tests/test_synthesize.py``
after checking the diff by eye; they are never rewritten silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from conftest import T0, flow_row, make_table, minutes, topology

from recommender import RecommendConfig, recommend

GOLDEN = Path(__file__).parents[1] / "golden" / "recommend"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"golden file {path} missing; run with UPDATE_GOLDEN=1"
    assert text == path.read_text()


def shop_rows() -> list[dict]:
    """A web -> api -> db chain in `shop`, DNS to kube-system, one external API, one denied flow,
    a kubelet probe, replies and ephemeral noise that must not become rules."""
    rows = []
    for i in range(5):
        t = T0 + minutes(10 * i)
        rows += [
            flow_row(
                start_time=t,
                end_time=t,
                src_namespace="shop",
                src_workload="web",
                src_ip="10.244.1.10",
                src_port=40000 + i,
                dst_namespace="shop",
                dst_workload="api",
                dst_ip="10.244.2.20",
                dst_port=8080,
            ),
            flow_row(
                start_time=t,
                end_time=t,
                src_namespace="shop",
                src_workload="api",
                src_ip="10.244.2.20",
                src_port=41000 + i,
                dst_namespace="shop",
                dst_workload="db",
                dst_ip="10.244.3.30",
                dst_port=5432,
            ),
            flow_row(
                start_time=t,
                end_time=t,
                src_namespace="shop",
                src_workload="api",
                src_ip="10.244.2.20",
                src_port=42000 + i,
                protocol="UDP",
                dst_namespace="kube-system",
                dst_workload="coredns",
                dst_labels={"k8s-app": "kube-dns", "pod-template-hash": "abc12"},
                dst_ip="10.244.0.5",
                dst_port=53,
            ),
            flow_row(
                start_time=t,
                end_time=t,
                src_namespace="shop",
                src_workload="api",
                src_ip="10.244.2.20",
                src_port=43000 + i,
                dst_kind="external",
                dst_name="world",
                dst_ip="52.94.236.248",
                dst_port=443,
            ),
            # The reply of web -> api: the reader would drop it; a Parquet input may hold it.
            flow_row(
                start_time=t,
                end_time=t,
                src_namespace="shop",
                src_workload="api",
                src_ip="10.244.2.20",
                src_port=8080,
                dst_namespace="shop",
                dst_workload="web",
                dst_ip="10.244.1.10",
                dst_port=40000 + i,
                is_reply=True,
            ),
            # The same with no reply flag: a well-known port answering an ephemeral one.
            flow_row(
                start_time=t,
                end_time=t,
                src_namespace="shop",
                src_workload="db",
                src_ip="10.244.3.30",
                src_port=5432,
                dst_namespace="shop",
                dst_workload="api",
                dst_ip="10.244.2.20",
                dst_port=41000 + i,
                is_reply=None,
            ),
        ]
    rows += [
        flow_row(
            src_namespace="shop",
            src_workload="web",
            src_ip="10.244.1.10",
            src_port=45000,
            dst_namespace="shop",
            dst_workload="db",
            dst_ip="10.244.3.30",
            dst_port=5432,
            verdict="denied",
        ),
        flow_row(
            src_kind="host",
            src_name="host",
            src_ip="172.18.0.2",
            src_port=50000,
            dst_namespace="shop",
            dst_workload="api",
            dst_ip="10.244.2.20",
            dst_port=8081,
        ),
    ]
    return rows


def test_shop_policies_golden():
    rec = recommend(make_table(shop_rows()))
    _golden("shop.yaml", rec.to_yaml())


def test_shop_semantics_by_hand():
    rec = recommend(make_table(shop_rows()))
    policies = {p.name: p for p in rec.policy_set.in_namespace("shop")}
    assert sorted(policies) == ["allow-api", "allow-db", "allow-web", "default-deny"]
    ports = {
        (name, rule.direction): sorted((p.protocol, p.port) for p in rule.ports)
        for name, p in policies.items()
        for rule in p.rules
        if not (name == "allow-api" and rule.direction == "egress")
    }
    assert ports[("allow-web", "egress")] == [("TCP", 8080)]
    assert ports[("allow-api", "ingress")] == [("TCP", 8080)]
    assert ports[("allow-db", "ingress")] == [("TCP", 5432)]
    # Never: denied web -> db, replies, the kubelet probe port, ephemeral ports.
    every_port = {p.port for p in rec.policy_set.policies for r in p.rules for p in r.ports}
    assert every_port == {53, 443, 5432, 8080}
    web_egress = [peer for r in policies["allow-web"].egress for peer in r.peers]
    assert all(dict(peer.pod_selector.match_labels) == {"app": "api"} for peer in web_egress)
    # DNS: both protocols, to the resolver's own labels in its namespace (no pod-template-hash).
    dns = next(r for r in policies["allow-api"].egress if any(p.port == 53 for p in r.ports))
    assert sorted((p.protocol, p.port) for p in dns.ports) == [("TCP", 53), ("UDP", 53)]
    assert dns.peers[0].pod_selector.match_labels == (("k8s-app", "kube-dns"),)
    assert dns.peers[0].namespace_selector.match_labels == (
        ("kubernetes.io/metadata.name", "kube-system"),
    )
    # External API: exactly its address.
    ext = [p.cidr for r in policies["allow-api"].egress for p in r.peers if p.kind == "cidr"]
    assert ext == ["52.94.236.248/32"]
    report = rec.report
    assert report["summary"]["denied_edges"] == 1
    assert {x["reason"] for x in report["excluded"]} == {"reply", "suspected-reply"}
    assert report["node_local"][0]["workload"] == "shop/api"
    assert "kube-system" in report["summary"]["namespaces_out_of_scope"]


def test_same_input_same_bytes(tmp_path: Path):
    rows = shop_rows()
    a = recommend(make_table(rows))
    b = recommend(make_table(list(reversed(shop_rows()))))
    assert a.to_yaml() == b.to_yaml()
    a.write(tmp_path / "a")
    b.write(tmp_path / "b")
    assert {"report.html", "report.json", "report.md"} <= {
        p.name for p in (tmp_path / "a").iterdir()
    }
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
            assert path.read_bytes() == twin.read_bytes(), path.name


def test_rare_edges_flagged_and_min_connections_excludes():
    rows = [
        *shop_rows(),
        flow_row(
            src_namespace="shop",
            src_workload="web",
            src_ip="10.244.1.10",
            src_port=46000,
            dst_namespace="shop",
            dst_workload="db",
            dst_ip="10.244.3.30",
            dst_port=9187,
        ),
    ]
    rec = recommend(make_table(rows))
    rare = [r for r in rec.report["rules"] if "TCP/9187" in r["ports"]]
    assert rare and all("rare" in r["flags"] for r in rare)
    strict = recommend(make_table(rows), min_connections=2)
    assert not [r for r in strict.report["rules"] if "TCP/9187" in r["ports"]]
    assert any(x["reason"] == "below-min-connections" for x in strict.report["excluded"])


def test_scattered_high_ports_are_not_rules():
    rows = [
        flow_row(
            src_namespace="a",
            src_workload="x",
            src_port=40000 + i,
            dst_namespace="a",
            dst_workload="y",
            dst_port=33000 + 17 * i,
        )
        for i in range(6)
    ]
    rows.append(
        flow_row(
            src_namespace="a",
            src_workload="x",
            src_port=45000,
            dst_namespace="a",
            dst_workload="y",
            dst_port=50051,
        )
    )
    rec = recommend(make_table(rows), max_ephemeral_ports=3)
    assert rec.policy_set.in_namespace("a")[0].egress == ()
    assert {x["reason"] for x in rec.report["excluded"]} == {"ephemeral-port"}
    # One high port used alone (gRPC on 50051) is a listening port, not noise.
    single = recommend(make_table(rows[-1:]))
    assert [p.port for r in single.policy_set.policies for r in r.egress for p in r.ports] == [
        50051
    ]


def test_internet_ingress_threshold():
    clients = [f"81.2.69.{i}" for i in range(1, 30)]
    rows = [
        flow_row(
            src_kind="external",
            src_name="world",
            src_ip=ip,
            src_port=50000,
            dst_namespace="web",
            dst_workload="frontend",
            dst_port=443,
        )
        for ip in clients
    ]
    few = recommend(make_table(rows[:3]))
    cidrs = sorted(p.cidr for pol in few.policy_set.policies for r in pol.ingress for p in r.peers)
    assert cidrs == ["81.2.69.1/32", "81.2.69.2/31"]  # exact: .2 and .3 make a /31
    many = recommend(make_table(rows))
    peers = [p for pol in many.policy_set.policies for r in pol.ingress for p in r.peers]
    # Issue 21 part 5: every IANA special-purpose block is carved out, not only RFC 1918.
    assert [(p.cidr, p.except_) for p in peers] == [("0.0.0.0/0", SPECIAL_V4)]
    # A source the input shows as denied on the rule's port is carved out too; one denied
    # only on another port is not.
    denied = [
        flow_row(
            src_kind="external",
            src_ip=ip,
            src_port=50001,
            dst_namespace="web",
            dst_workload="frontend",
            dst_port=port,
            verdict="denied",
        )
        for ip, port in (("203.0.114.7", 443), ("198.19.255.255", 443), ("9.9.9.9", 22))
    ]
    carved = recommend(make_table(rows + denied))
    peers = [p for pol in carved.policy_set.policies for r in pol.ingress for p in r.peers]
    assert [(p.cidr, p.except_) for p in peers] == [
        ("0.0.0.0/0", tuple(sorted((*SPECIAL_V4, "203.0.114.7/32"), key=_address_order)))
    ]


def _address_order(cidr: str) -> tuple[int, int]:
    import ipaddress

    net = ipaddress.ip_network(cidr)
    return int(net.network_address), net.prefixlen


SPECIAL_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
)


def test_cidr_budget_merges_within_class_only():
    rows = [
        flow_row(
            src_namespace="a",
            src_workload="x",
            src_port=40000,
            dst_kind="external",
            dst_ip=ip,
            dst_port=443,
        )
        for ip in ("8.8.8.8", "8.8.8.9", "8.8.8.11")
    ]
    exact = recommend(make_table([dict(r) for r in rows]))
    merged = recommend(make_table([dict(r) for r in rows]), cidr_budget=1)

    def get(rec):
        return sorted(
            p.cidr for pol in rec.policy_set.policies for r in pol.egress for p in r.peers
        )

    assert get(exact) == ["8.8.8.11/32", "8.8.8.8/31"]
    assert get(merged) == ["8.8.8.8/30"]


def test_port_range_budget():
    rows = [
        flow_row(
            src_namespace="a",
            src_workload="x",
            src_port=40000 + p,
            dst_namespace="a",
            dst_workload="y",
            dst_port=p,
        )
        for p in (8080, 8081, 8083)
    ]
    exact = recommend(make_table([dict(r) for r in rows]))
    ranged = recommend(make_table([dict(r) for r in rows]), port_range_budget=1)

    def spec(rec):
        return [
            (p.port, p.end_port)
            for pol in rec.policy_set.policies
            for r in pol.egress
            for p in r.ports
        ]

    assert spec(exact) == [(8080, None), (8081, None), (8083, None)]
    assert spec(ranged) == [(8080, 8083)]


def test_namespace_scope_and_time_window():
    rows = shop_rows()
    only = recommend(make_table(rows), namespaces=("kube-system",))
    assert only.policy_set.namespaces == ("kube-system",)
    late = recommend(make_table(shop_rows()), since=T0 + minutes(15))
    assert late.report["summary"]["connection_rows"] < len(rows)
    with pytest.raises(Exception, match="since must be before until"):
        RecommendConfig(since=T0, until=T0)


def test_selectors_survive_a_rollout_and_hash_labels_never_select():
    rows = []
    for i, pod_hash in enumerate(("aaaa1", "bbbb2")):  # two ReplicaSets of one Deployment
        rows.append(
            flow_row(
                src_namespace="a",
                src_workload="client",
                src_port=40000 + i,
                src_labels={"app": "client", "pod-template-hash": pod_hash},
                dst_namespace="a",
                dst_workload="server",
                dst_port=80,
                dst_labels={"app": "server", "pod-template-hash": pod_hash},
            )
        )
    rec = recommend(make_table(rows))
    text = rec.to_yaml()
    assert "pod-template-hash" not in text
    assert yaml.safe_load_all(text)


def test_oracle_agrees_on_shop(nca_check):
    rec = recommend(make_table(shop_rows()))
    workloads = {
        ("shop", "web"): {"app": "web"},
        ("shop", "api"): {"app": "api"},
        ("shop", "db"): {"app": "db"},
        ("kube-system", "coredns"): {"k8s-app": "kube-dns"},
    }
    expect = [
        {"src": "shop/web", "dst": "shop/api", "protocol": "TCP", "port": 8080, "allowed": True},
        {"src": "shop/api", "dst": "shop/db", "protocol": "TCP", "port": 5432, "allowed": True},
        {
            "src": "shop/api",
            "dst": "kube-system/coredns",
            "protocol": "UDP",
            "port": 53,
            "allowed": True,
        },
        {
            "src": "shop/api",
            "dst": "kube-system/coredns",
            "protocol": "TCP",
            "port": 53,
            "allowed": True,
        },
        {
            "src": "shop/api",
            "dst": "52.94.236.248",
            "protocol": "TCP",
            "port": 443,
            "allowed": True,
        },
        {"src": "shop/web", "dst": "shop/db", "protocol": "TCP", "port": 5432, "allowed": False},
        {"src": "shop/api", "dst": "shop/web", "protocol": "TCP", "port": 40000, "allowed": False},
        {"src": "shop/db", "dst": "shop/api", "protocol": "TCP", "port": 41000, "allowed": False},
        {"src": "shop/web", "dst": "shop/api", "protocol": "TCP", "port": 8081, "allowed": False},
        {
            "src": "shop/web",
            "dst": "52.94.236.248",
            "protocol": "TCP",
            "port": 443,
            "allowed": False,
        },
        {
            "src": "shop/api",
            "dst": "52.94.236.249",
            "protocol": "TCP",
            "port": 443,
            "allowed": False,
        },
    ]
    passed, failed, out = nca_check(rec.manifests(), topology(workloads), expect)
    assert failed == 0, out
    assert passed == len(expect)


def test_report_self_check_replays_the_evidence():
    report = recommend(make_table(shop_rows())).report
    check = report["self_check"]
    assert check["coverage"] == 1.0
    assert check["false_denies"] == 0
    assert check["denied_in_input_but_allowed"] == 0
    # web, api, db and coredns: nothing unobserved among shop's workloads is allowed.
    assert check["over_permissive"]["allowed_unobserved"] == 0
