"""A "wide" cluster for benchmarks: many workloads in many namespaces, a few edges each.

:func:`wide_scenario` builds a :class:`~recommender.samples.generator.Scenario` with
``workloads`` application workloads spread evenly over ``namespaces`` namespaces, plus the
cluster DNS and Prometheus. Each workload calls about ``edges_per_workload - 1`` others (mostly
in its own namespace, one in five in another namespace) and the DNS: about
``edges_per_workload`` edges per workload. One workload per namespace is a frontend that
internet clients reach, one in ten workloads calls the external API, the kubelet probes every
workload. :func:`~recommender.samples.generator.generate_connections` draws a fixed number of
connections from it, so the rows stay fixed while the graph grows (``benchmarks/bench_wide.py``).

Deterministic: the same arguments give the same scenario, and the generator's seed the same
stream.

>>> sc = wide_scenario(workloads=40, namespaces=4)
>>> len({w.namespace for w in sc.workloads}), len(sc.workloads)
(6, 42)
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Final

from .generator import DEFAULT_SCENARIO, EdgeSpec, NodeSpec, Scenario, WorkloadSpec

__all__ = ["wide_scenario"]

#: Label values shared by many workloads (the selectors must tell workloads apart anyway).
_TIERS: Final = ("frontend", "backend", "backend", "data")
_TEAMS: Final = ("checkout", "search", "identity", "billing", "media", "ads", "catalog")
#: Workloads per node (one node per this many workloads, at least three nodes).
_WORKLOADS_PER_NODE: Final = 100


def _workload(namespace: str, index: int, rng: random.Random) -> WorkloadSpec:
    name = f"svc-{index:05d}"
    tier = "frontend" if index == 0 else _TIERS[1 + rng.randrange(len(_TIERS) - 1)]
    labels = tuple(sorted((
        ("app.kubernetes.io/name", name),
        ("app.kubernetes.io/part-of", namespace),
        ("team", _TEAMS[rng.randrange(len(_TEAMS))]),
        ("tier", tier),
        ("version", f"{1 + rng.randrange(4)}.{rng.randrange(10)}.0"),
    )))
    stateful = tier == "data" and rng.random() < 0.5
    port = 5432 if stateful else 8080
    return WorkloadSpec(
        namespace, name, "StatefulSet" if stateful else "Deployment",
        1 + rng.randrange(3), labels, name,
        (("http", port, "TCP"), ("health", 8081, "TCP"), ("metrics", 9090, "TCP")),
        service=name, rolls=not stateful and rng.random() < 0.2,
    )


def wide_scenario(
    workloads: int = 2_000,
    namespaces: int = 40,
    *,
    edges_per_workload: int = 5,
    seed: int = 0,
) -> Scenario:
    """A cluster of ``workloads`` workloads in ``namespaces`` namespaces (see the module).

    Parameters
    ----------
    workloads : int, default 2000
        Application workloads (the DNS and Prometheus come on top).
    namespaces : int, default 40
        Application namespaces; the workloads are spread evenly over them.
    edges_per_workload : int, default 5
        Edges each workload starts: calls to other workloads and the DNS.
    seed : int, default 0
        Seeds the choice of labels and peers.

    Returns
    -------
    Scenario
        Nodes, workloads, edges (equal weights but the DNS and probes, lighter) and no
        scheduled connections.
    """
    if workloads < 1 or namespaces < 1 or namespaces > workloads:
        raise ValueError("need 1 <= namespaces <= workloads")
    rng = random.Random(f"wide/{workloads}/{namespaces}/{edges_per_workload}/{seed}")
    names = [f"ns-{i:03d}" for i in range(namespaces)]
    by_ns: list[list[WorkloadSpec]] = [[] for _ in names]
    for i in range(workloads):
        k = i % namespaces
        by_ns[k].append(_workload(names[k], len(by_ns[k]), rng))
    apps = [w for group in by_ns for w in group]
    base = {w.name: w for w in DEFAULT_SCENARIO.workloads}
    shared = (replace(base["coredns"], replicas=2), base["prometheus"])
    edges: list[EdgeSpec] = []
    calls = max(edges_per_workload - 1, 0)
    for k, group in enumerate(by_ns):
        for w in group:
            targets: set[str] = set()
            for _ in range(calls):
                if namespaces > 1 and rng.random() < 0.2:
                    other = by_ns[(k + 1 + rng.randrange(namespaces - 1)) % namespaces]
                else:
                    other = group
                peer = other[rng.randrange(len(other))]
                if peer.ref != w.ref:
                    targets.add(peer.ref)
            for ref in sorted(targets):
                edges.append(EdgeSpec(f"{w.ref}->{ref}", (w.ref,), (ref,), "http",
                                      l7="http", l7_fraction=0.05,
                                      http=(("GET", "/api/items"), ("POST", "/api/items"))))
            edges.append(EdgeSpec(f"{w.ref}->dns", (w.ref,), ("kube-system/coredns",), "dns",
                                  "UDP", weight=0.5, l7="dns", l7_fraction=0.2,
                                  request_bytes=(60, 90), response_bytes=(90, 220),
                                  duration_ms=(0.2, 3)))
            if rng.random() < 0.1:
                edges.append(EdgeSpec(f"{w.ref}->external", (w.ref,), ("external",), 443,
                                      weight=0.5))
        edges.append(EdgeSpec(f"world->{group[0].ref}", ("world",), (group[0].ref,), "http"))
    edges.append(EdgeSpec("prometheus-scrape", ("monitoring/prometheus",), ("*metrics",),
                          "metrics", weight=max(1.0, workloads / 20)))
    edges.append(EdgeSpec("kubelet-probes", ("host",), ("*health",), "health",
                          weight=max(1.0, workloads / 20)))
    nodes = tuple(
        NodeSpec(f"node-{i:03d}", f"172.18.{i // 250}.{i % 250 + 2}")
        for i in range(max(3, workloads // _WORKLOADS_PER_NODE))
    )
    return replace(
        DEFAULT_SCENARIO,
        name=f"wide-{workloads}-{namespaces}",
        nodes=nodes,
        workloads=(*apps, *shared),
        edges=tuple(edges),
        scheduled=(),
        apiserver_ip=nodes[0].ip,
        default_connections=20_000,
    )
