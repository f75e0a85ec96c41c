"""Property tests on random topologies, checked by the independent oracle (NCA).

For any set of observed flows: every observed allowed connection is allowed by the emitted
policies, and every other workload pair / protocol / port is denied. Pods in the topology carry
a different pod-template-hash than in the flows (a rollout happened in between).
"""

from __future__ import annotations

import itertools

from conftest import flow_row, make_table, topology
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import recommend

NAMESPACES = ("alpha", "beta")
PORTS = (80, 443, 5432, 8080)
PROTOCOLS = ("TCP", "UDP")


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 5))
    workloads = []
    for i in range(n):
        ns = draw(st.sampled_from(NAMESPACES))
        labels = {"app": f"w{i}"}
        if draw(st.booleans()):
            labels["tier"] = draw(st.sampled_from(["front", "back"]))
        workloads.append((ns, f"w{i}", labels))
    pairs = [(a, b) for a, b in itertools.permutations(range(n), 2)]
    edges = draw(
        st.sets(
            st.tuples(st.sampled_from(pairs), st.sampled_from(PROTOCOLS), st.sampled_from(PORTS)),
            min_size=1,
            max_size=8,
        )
    )
    denied = draw(
        st.sets(
            st.tuples(st.sampled_from(pairs), st.sampled_from(PROTOCOLS), st.sampled_from(PORTS)),
            max_size=3,
        )
    )
    return workloads, sorted(edges), sorted(denied - edges)


def _rows(workloads, edges, verdict):
    rows = []
    for k, ((a, b), proto, port) in enumerate(edges):
        ns_a, name_a, labels_a = workloads[a]
        ns_b, name_b, labels_b = workloads[b]
        rows.append(
            flow_row(
                src_namespace=ns_a,
                src_workload=name_a,
                src_pod=f"{name_a}-5d8f7c9b6-abcde",
                src_labels={**labels_a, "pod-template-hash": "5d8f7c9b6"},
                src_ip=f"10.1.0.{a + 1}",
                src_port=40000 + k,
                dst_namespace=ns_b,
                dst_workload=name_b,
                dst_labels={**labels_b, "pod-template-hash": "7b4c6d5f8"},
                dst_ip=f"10.1.0.{b + 1}",
                dst_port=port,
                protocol=proto,
                verdict=verdict,
            )
        )
    return rows


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenarios())
def test_observed_allowed_and_nothing_else(nca_check, scenario):
    workloads, edges, denied = scenario
    rows = _rows(workloads, edges, "allowed") + _rows(workloads, denied, "denied")
    rec = recommend(make_table(rows))
    observed = {(a, b, proto, port) for (a, b), proto, port in edges}
    expect = []
    for a, b in itertools.permutations(range(len(workloads)), 2):
        for proto in PROTOCOLS:
            for port in PORTS:
                expect.append(
                    {
                        "src": f"{workloads[a][0]}/{workloads[a][1]}",
                        "dst": f"{workloads[b][0]}/{workloads[b][1]}",
                        "protocol": proto,
                        "port": port,
                        "allowed": (a, b, proto, port) in observed,
                    }
                )
    topo = topology({(ns, name): labels for ns, name, labels in workloads})
    _passed, failed, out = nca_check(rec.manifests(), topo, expect)
    assert failed == 0, out
    assert rec.report["summary"]["denied_edges"] == len(denied)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenarios(), st.randoms(use_true_random=False))
def test_output_independent_of_row_order(scenario, rnd):
    workloads, edges, denied = scenario
    rows = _rows(workloads, edges, "allowed") + _rows(workloads, denied, "denied")
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert recommend(make_table(rows)).to_yaml() == recommend(make_table(shuffled)).to_yaml()
