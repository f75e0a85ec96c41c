"""The wide scenario of the scaling benchmark (issue 22): its shape, and that the generator
writes valid, distinct addresses for thousands of workloads."""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter

import pytest

from recommender.samples import generate_connections
from recommender.samples.generator import _Cluster
from recommender.samples.wide import wide_scenario


def test_shape():
    sc = wide_scenario(workloads=400, namespaces=20)
    apps = [w for w in sc.workloads if w.namespace.startswith("ns-")]
    assert len(apps) == 400
    assert set(Counter(w.namespace for w in apps).values()) == {20}
    calls = [e for e in sc.edges if "->" in e.name and e.name.count("/") == 2]
    per_workload = (len(calls) + sum(e.name.endswith("->dns") for e in sc.edges)) / len(apps)
    assert 4 <= per_workload <= 5  # ~5 edges each (a repeated peer is drawn once)
    assert sum(e.dst[0].startswith("ns-") and e.src[0].split("/")[0] != e.dst[0].split("/")[0]
               for e in calls) > 0.1 * len(calls)  # some cross-namespace calls
    assert wide_scenario(workloads=400, namespaces=20) == sc  # deterministic


def test_ten_thousand_workloads_get_valid_distinct_service_addresses():
    cluster = _Cluster(wide_scenario(workloads=10_000, namespaces=200))
    ips = list(cluster.service_ip.values())
    assert len(set(ips)) == len(ips) > 10_000
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/12") for ip in ips)


def test_connections_are_drawn_over_the_whole_cluster():
    sc = wide_scenario(workloads=200, namespaces=10)
    conns = list(itertools.islice(generate_connections(sc, connections=2_000, seed=1), 2_000))
    assert len(conns) == 2_000
    sources = {c.src.pod.namespace for c in conns if c.src.pod is not None}
    assert len({ns for ns in sources if ns.startswith("ns-")}) == 10


def test_rejects_more_namespaces_than_workloads():
    with pytest.raises(ValueError):
        wide_scenario(workloads=3, namespaces=5)
