"""Generalisation that never admits what was refused (issue 21, part 5): property tests.

For random flows and random widening options (internet threshold, CIDR budget, port-range
budget, budgeted compaction), judged by the project's evaluator on the emitted PolicySet:

* no refused flow (denied, excluded below ``min_connections``, or "failed" handed to
  :func:`synthesize` as extra :class:`Refused` items) is allowed, unless the same tuple was also
  observed allowed;
* no special-purpose address (one probe in every IANA registry block, IPv4 and IPv6) is allowed
  unless exactly that address was observed with that workload, direction and protocol (then a
  port range may reach other ports of it);
* every observed allowed connection is still allowed (carving never takes away evidence).
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from conftest import flow_row, make_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import RecommendConfig, recommend
from recommender.aggregate.addresses import classify_address
from recommender.aggregate.edges import aggregate_edges
from recommender.evaluation.evaluator import Cluster, Endpoint, Pod, evaluate
from recommender.synthesis import synthesize
from recommender.synthesis.refused import Refused, RefusedSet

NAMESPACES = ("alpha", "beta")
PORTS = (80, 81, 82, 443, 8080)
#: Public addresses close together (so budgets merge them) and special-purpose ones.
PUBLIC = (*(f"81.2.69.{i}" for i in range(12)), "8.8.8.8", "8.8.8.9", "2a00:1450::5")
SPECIAL = (
    "10.0.0.5",
    "10.0.0.6",
    "100.64.0.7",
    "169.254.169.254",
    "192.0.2.10",
    "198.51.100.3",
    "203.0.113.9",
    "fd00::5",
    "2001:db8::7",
)
ADDRESSES = PUBLIC + SPECIAL
#: One address in every special-purpose block: none may be admitted unless observed exactly.
PROBES = (
    "0.1.2.3",
    "10.9.9.9",
    "100.64.9.9",
    "127.0.0.5",
    "169.254.169.254",
    "169.254.1.1",
    "172.16.5.5",
    "192.0.0.9",
    "192.0.2.7",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.9",
    "198.51.100.9",
    "203.0.113.9",
    "224.0.0.251",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "64:ff9b::808:808",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
    "2001:db8::1",
    "2001::1",
    "ff02::1",
)

Flow = tuple[str, str, str, int]  # (source, destination, protocol, port): "ns/wl" or an address


@st.composite
def _block(draw: Any, names: list[str]) -> set[Flow]:
    """Every (owner, peer, port) of some owners, peers and ports: the shape widening acts on
    (several peers on one port set: CIDR merging; one peer on several ports: ranges; owners
    alike: compaction)."""
    owners = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    peers = draw(
        st.lists(
            st.one_of(st.sampled_from(ADDRESSES), st.sampled_from(names)),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    ports = draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=3, unique=True))
    proto = draw(st.sampled_from(("TCP", "UDP")))
    ingress = draw(st.booleans())
    return {
        (peer, owner, proto, port) if ingress else (owner, peer, proto, port)
        for owner in owners
        for peer in peers
        for port in ports
        if peer != owner
    }


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(2, 4))
    workloads = [(draw(st.sampled_from(("alpha", *NAMESPACES))), f"w{i}") for i in range(n)]
    names = [f"{ns}/{wl}" for ns, wl in workloads]
    peer = st.one_of(st.sampled_from(names), st.sampled_from(ADDRESSES))
    flow = st.tuples(peer, st.sampled_from(names), st.sampled_from(("TCP", "UDP")),
                     st.sampled_from(PORTS))  # fmt: skip
    egress = st.tuples(st.sampled_from(names), peer, st.sampled_from(("TCP", "UDP")),
                       st.sampled_from(PORTS))  # fmt: skip
    any_flow = st.one_of(flow, egress).filter(lambda f: f[0] != f[1])
    allowed: set[Flow] = set().union(*draw(st.lists(_block(names), min_size=1, max_size=4)))
    allowed |= draw(st.sets(any_flow, max_size=6))
    refused = draw(st.sets(any_flow, max_size=12))
    excluded = draw(st.sets(any_flow, max_size=6))
    failed = draw(st.sets(any_flow, max_size=6))
    options = {
        "internet_ingress_sources": draw(st.integers(0, 4)),
        "cidr_budget": draw(st.sampled_from((0, 3, 64, 1 << 24))),
        "port_range_budget": draw(st.sampled_from((0, 2, 1000))),
        "compact_policies": draw(st.booleans()),
        "compaction_budget": draw(st.sampled_from((0, 5, 100))),
        "min_connections": 2,
        "trust_all_flows": True,
        "dns_both_protocols": False,
    }
    return {
        "workloads": workloads,
        "allowed": sorted(allowed),
        "denied": sorted(refused - allowed),
        "excluded": sorted(excluded - allowed - refused),
        "failed": sorted(failed - allowed),
        "options": options,
    }


def _endpoint(text: str, side: str, ip_of: dict[str, str]) -> dict[str, Any]:
    if "/" in text:
        ns, wl = text.split("/")
        return {
            f"{side}_kind": "workload",
            f"{side}_namespace": ns,
            f"{side}_workload": wl,
            f"{side}_labels": {"app": wl, "pod-template-hash": "5d8f7c9b6"},
            f"{side}_ip": ip_of[text],
        }
    return {f"{side}_kind": "external", f"{side}_ip": text}


def _rows(flows: list[Flow], verdict: str, connections: int, ip_of: dict[str, str]) -> list[dict]:
    rows = []
    for k, (src, dst, proto, port) in enumerate(flows):
        rows.append(
            flow_row(
                **_endpoint(src, "src", ip_of),
                **_endpoint(dst, "dst", ip_of),
                src_port=40000 + k,
                dst_port=port,
                protocol=proto,
                verdict=verdict,
                connections=connections,
            )
        )
    return rows


def _table(scenario: dict[str, Any]) -> Any:
    ip_of = {f"{ns}/{wl}": f"10.244.0.{i + 1}" for i, (ns, wl) in enumerate(scenario["workloads"])}
    rows = (
        _rows(scenario["allowed"], "allowed", 3, ip_of)
        + _rows(scenario["denied"], "denied", 3, ip_of)
        + _rows(scenario["excluded"], "allowed", 1, ip_of)  # below min_connections: excluded
    )
    return make_table(rows)


def _cluster(scenario: dict[str, Any]) -> Cluster:
    pods = tuple(
        Pod(ns, wl, {"app": wl, "pod-template-hash": "rollout-b"})
        for ns, wl in scenario["workloads"]
    )
    return Cluster({}, pods)


def _allowed(policy_set: Any, cluster: Cluster, flow: Flow) -> bool:
    src, dst, proto, port = flow
    a: Pod | Endpoint | str = src if "/" in src else Endpoint(src)
    b: Pod | Endpoint | str = dst if "/" in dst else Endpoint(dst)
    return evaluate(policy_set, cluster, a, b, proto, port).allowed


def _check(policy_set: Any, scenario: dict[str, Any], refused: list[Flow]) -> None:
    cluster = _cluster(scenario)
    allowed = set(scenario["allowed"])
    false_denies = [f for f in allowed if not _allowed(policy_set, cluster, f)]
    assert not false_denies, false_denies
    # Workloads the input shows (a namespace no row names gets no default deny at all).
    seen = {
        end
        for f in scenario["allowed"] + scenario["denied"] + scenario["excluded"]
        for end in f[:2]
        if "/" in end
    }
    names = sorted(seen)
    admitted = [
        f
        for f in refused
        if f not in allowed
        and all(end in seen for end in f[:2] if "/" in end)
        and _allowed(policy_set, cluster, f)
    ]
    assert not admitted, admitted
    # A special-purpose address observed as a peer of a workload (direction, protocol) may get
    # a port range there (port widening); no other may be admitted at all.
    known = {f[:3] for f in allowed}  # (source, destination, protocol)
    leaks = []
    for probe, name, proto, port in itertools.product(PROBES, names, ("TCP", "UDP"), PORTS):
        assert classify_address(probe) != "public"
        for flow in ((probe, name, proto, port), (name, probe, proto, port)):
            if flow[:3] in known:
                continue
            if _allowed(policy_set, cluster, flow):
                leaks.append(flow)
    assert not leaks, leaks


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_recommend_never_widens_over_refused_or_special(scenario: dict[str, Any]) -> None:
    rec = recommend(_table(scenario), **scenario["options"])
    _check(rec.policy_set, scenario, scenario["denied"] + scenario["excluded"])


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_failed_flows_plug_into_the_refused_set(scenario: dict[str, Any]) -> None:
    """Flows the input shows as never established reach synthesis as extra Refused items."""
    config = RecommendConfig().replace(**scenario["options"])
    tables = aggregate_edges(_table(scenario), config)
    items = []
    for src, dst, proto, port in scenario["failed"]:
        if "/" in dst:
            ns, wl = dst.split("/")
            peer = tuple(src.split("/")) if "/" in src else src
            items.append(Refused((ns, wl), "ingress", peer, proto, port, "failed"))
        if "/" in src:
            ns, wl = src.split("/")
            peer = tuple(dst.split("/")) if "/" in dst else dst
            items.append(Refused((ns, wl), "egress", peer, proto, port, "failed"))
    refused = RefusedSet.from_tables(tables) | RefusedSet(items)
    policy_set, _findings = synthesize(tables, config, refused)
    _check(policy_set, scenario, scenario["denied"] + scenario["excluded"] + scenario["failed"])


def test_a_widening_that_would_admit_a_refused_flow_is_not_made() -> None:
    """The three budgets on one small case: each one's widening stops at the refused flow."""
    scenario = {
        "workloads": [("alpha", "w0"), ("alpha", "w1")],
        "allowed": [
            ("alpha/w0", "8.8.8.8", "TCP", 443),
            ("alpha/w0", "8.8.8.11", "TCP", 443),
            ("alpha/w0", "alpha/w1", "TCP", 80),
            ("alpha/w0", "alpha/w1", "TCP", 82),
        ],
        "denied": [
            ("alpha/w0", "8.8.8.10", "TCP", 443),
            ("alpha/w0", "alpha/w1", "TCP", 81),
        ],
        "excluded": [],
        "failed": [],
        "options": {"cidr_budget": 1 << 20, "port_range_budget": 1000, "trust_all_flows": True},
    }
    rec = recommend(_table(scenario), **scenario["options"])
    text = rec.to_yaml()
    assert "endPort" not in text  # 80-82 would span the denied 81
    assert "8.8.8.8/32" in text and "8.8.8.11/32" in text  # 8.8.8.8/30 would hold .10
    _check(rec.policy_set, scenario, scenario["denied"])
    # Without the denied flows, the same budgets do widen.
    wide = recommend(_table({**scenario, "denied": []}), **scenario["options"])
    assert "endPort: 82" in wide.to_yaml()
    assert "8.8.8.8/30" in wide.to_yaml()


def test_budgeted_compaction_never_grants_a_refused_flow() -> None:
    """Two workloads that behave alike share a policy within the budget, unless the shared
    rules would let one of them do what the input shows it was refused."""
    targets = [("alpha/db", 5432), ("alpha/cache", 6379), ("alpha/api", 8080)]
    allowed = [("alpha/w0", dst, "TCP", port) for dst, port in targets]
    allowed += [("alpha/w1", dst, "TCP", port) for dst, port in targets]
    allowed += [("alpha/w1", "alpha/queue", "TCP", 5672)]
    workloads = [("alpha", w) for w in ("w0", "w1", "db", "cache", "api", "queue")]
    options = {"compact_policies": True, "compaction_budget": 5, "trust_all_flows": True}
    base = {"workloads": workloads, "allowed": allowed, "excluded": [], "failed": []}
    merged = recommend(_table({**base, "denied": []}), **options)
    assert any(r["workloads"] == ["w0", "w1"] for r in merged.findings.compaction)
    refused = [("alpha/w0", "alpha/queue", "TCP", 5672)]
    held = recommend(_table({**base, "denied": refused}), **options)
    assert not any("w0" in r["workloads"] for r in held.findings.compaction)
    _check(held.policy_set, {**base, "denied": refused, "options": options}, refused)


def test_internet_rule_flags_and_an_unknown_refused_source() -> None:
    clients = [f"81.2.69.{i}" for i in range(1, 20)]
    rows = [
        flow_row(
            src_kind="external",
            src_ip=ip,
            src_port=50000,
            dst_namespace="web",
            dst_workload="frontend",
            dst_port=443,
        )
        for ip in clients
    ]
    denied = flow_row(
        src_kind="external",
        src_ip="81.2.70.9",
        src_port=50001,
        dst_namespace="web",
        dst_workload="frontend",
        dst_port=443,
        verdict="denied",
    )
    carved = recommend(make_table([*rows, denied]))
    (rule,) = [r for p in carved.policy_set.policies for r in p.ingress]
    assert rule.evidence.flags == ("internet", "refused-carved")
    assert "81.2.70.9/32" in rule.peers[0].except_
    # A refused source without an address (a Calico aggregated "pub" record) may be anywhere:
    # no internet rule, every client named exactly.
    unknown = {**denied, "src_ip": None, "src_name": "pub"}
    held = recommend(make_table([*rows, unknown]))
    peers = [p for pol in held.policy_set.policies for r in pol.ingress for p in r.peers]
    assert all(p.except_ == () for p in peers)
    assert sum(ipaddress.ip_network(p.cidr).num_addresses for p in peers) == len(clients)
    flags = {f for pol in held.policy_set.policies for r in pol.ingress for f in r.evidence.flags}
    assert "internet-held-back" in flags and "internet" not in flags


@st.composite
def _alike(draw: Any) -> dict[str, Any]:
    """Two workloads that behave alike (so budgeted compaction merges them) with random extra
    grants for one and random refused flows for the other."""
    peers = [f"alpha/p{i}" for i in range(4)]
    workloads = [("alpha", "w0"), ("alpha", "w1")] + [("alpha", f"p{i}") for i in range(4)]
    allowed = {(w, p, "TCP", 80) for w in ("alpha/w0", "alpha/w1") for p in peers[:3]}
    extra = st.tuples(st.just("alpha/w1"), st.sampled_from(peers), st.just("TCP"),
                      st.sampled_from(PORTS))  # fmt: skip
    allowed |= draw(st.sets(extra, min_size=1, max_size=2))
    refusal = st.tuples(st.just("alpha/w0"), st.sampled_from(peers), st.just("TCP"),
                        st.sampled_from(PORTS))  # fmt: skip
    denied = draw(st.sets(refusal, max_size=3)) - allowed
    options = {
        "compact_policies": True,
        "compaction_budget": draw(st.sampled_from((2, 5, 100))),
        "trust_all_flows": True,
        "port_range_budget": draw(st.sampled_from((0, 1000))),
    }
    return {
        "workloads": workloads,
        "allowed": sorted(allowed),
        "denied": sorted(denied),
        "excluded": [],
        "failed": [],
        "options": options,
    }


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_alike())
def test_compaction_never_grants_a_refused_flow(scenario: dict[str, Any]) -> None:
    rec = recommend(_table(scenario), **scenario["options"])
    _check(rec.policy_set, scenario, scenario["denied"])
