"""Behavioural clustering of a generated workload set (target: 50k workloads in 60 s on 2 cores).

    python benchmarks/bench_clustering.py --workloads 50000 [--seed 0] [--out FILE.json]

1. Generates an edge table (the columns of ``EdgeTables.edges`` that clustering reads) for
   ``--workloads`` workloads in namespaces of mixed size: one namespace holds a fifth of them
   (so its block is far above ``exact_block_size`` and goes through MinHash LSH), the others
   a few hundred each (all pairs compared exactly). Each namespace has a few backends and a
   gateway; every other workload plays one of 25 roles (a fixed set of backends and ports,
   DNS, Prometheus scraping, the gateway's ingress) with noise: 30 % of the workloads talk to
   one extra backend, 20 % miss one of their role's edges.
2. Times, once each (not timed: generating the table):

   - ``communication_features(edges)``: the sparse workload x feature matrix;
   - ``BehaviourClustering(random_state=0).fit(X, groups=namespaces)``: exact-signature
     grouping, candidate pairs, agglomerative clustering and confidences;
   - ``explain(...)``: the explanation of every cluster of two or more.

3. Prints the times, the total, and the numbers of signatures, candidate pairs and clusters;
   checks that the clusters found match the generated roles (adjusted Rand index).

With ``--flows FILE.parquet`` (a canonical flow table, e.g. ``benchmarks/data/parquet-1000000-
s0-v2.parquet`` from ``bench_ingest.py``) it also times what anomaly screening adds to a run:
``aggregate_edges(table)`` against ``screen_flows(tables, table)`` (best of ``--repeat``; the
first screening pays the scikit-learn import, timed separately).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def generate_edges(workloads: int, seed: int) -> tuple[Any, dict[str, int]]:
    """The edge table and each generated workload's role (``namespace/name`` -> role id)."""
    import pyarrow as pa

    from recommender.aggregate.edges import EDGE_KEY

    rng = np.random.default_rng(seed)
    big = workloads // 5
    rest = workloads - big
    sizes = [big]
    while rest > 0:
        take = int(min(rest, rng.integers(300, 900)))
        sizes.append(take)
        rest -= take
    cols: dict[str, list[Any]] = {k: [] for k in (*EDGE_KEY, "connections")}
    roles: dict[str, int] = {}

    def edge(sns: str, src: str, dns: str, dst: str, proto: str, port: int) -> None:
        cols["src_kind"].append("workload")
        cols["src_namespace"].append(sns)
        cols["src_id"].append(src)
        cols["dst_kind"].append("workload")
        cols["dst_namespace"].append(dns)
        cols["dst_id"].append(dst)
        cols["protocol"].append(proto)
        cols["dst_port"].append(port)
        cols["connections"].append(int(rng.integers(1, 500)))

    n_roles, n_backends = 25, 12
    ports = [5432, 6379, 8080, 8443, 9000, 27017, 9092, 3306]
    for k, size in enumerate(sizes):
        ns = f"team-{k:03d}"
        backends = [f"backend-{b}" for b in range(n_backends)]
        # Each role: 2-4 (backend, port) pairs.
        templates = [
            [
                (int(b), ports[int(b) % len(ports)])
                for b in rng.choice(n_backends, size=int(rng.integers(2, 5)), replace=False)
            ]
            for _ in range(n_roles)
        ]
        for b in backends:
            edge(ns, b, "kube-system", "coredns", "UDP", 53)
            roles[f"{ns}/{b}"] = -1
        for w in range(size - n_backends - 1):
            name = f"svc-{w:05d}"
            role = int(rng.integers(n_roles))
            roles[f"{ns}/{name}"] = role
            targets = list(templates[role])
            if rng.random() < 0.2 and len(targets) > 1:
                targets.pop(int(rng.integers(len(targets))))
            if rng.random() < 0.3:
                b = int(rng.integers(n_backends))
                targets.append((b, ports[(b + 1) % len(ports)]))
            for b, port in targets:
                edge(ns, name, ns, backends[b], "TCP", port)
            edge(ns, name, "kube-system", "coredns", "UDP", 53)
            edge(ns, name, "kube-system", "coredns", "TCP", 53)
            edge("monitoring", "prometheus", ns, name, "TCP", 9090)
            edge(ns, "gateway", ns, name, "TCP", 8080 + role % 3)
    table = pa.table(
        {
            **{
                k: pa.array(v, pa.string())
                for k, v in cols.items()
                if k not in ("dst_port", "connections")
            },
            "dst_port": pa.array(cols["dst_port"], pa.int32()),
            "connections": pa.array(cols["connections"], pa.int64()),
        }
    )
    return table, roles


def screening(path: Path, repeat: int, out: Path | None) -> int:
    """Time aggregation and anomaly screening on a canonical flow table."""
    import pyarrow.parquet as pq

    from recommender.aggregate.edges import aggregate_edges
    from recommender.analysis.anomaly import screen_flows

    table = pq.read_table(path)
    started = time.perf_counter()
    import sklearn.base  # noqa: F401  (the one-off import the first screening pays)

    imported = time.perf_counter() - started
    best_agg = best_screen = float("inf")
    tables = None
    for _ in range(repeat):
        started = time.perf_counter()
        tables = aggregate_edges(table)
        best_agg = min(best_agg, time.perf_counter() - started)
        started = time.perf_counter()
        result = screen_flows(tables, table)
        best_screen = min(best_screen, time.perf_counter() - started)
    assert tables is not None
    summary = {
        "rows": table.num_rows,
        "edges": tables.edges.num_rows,
        "aggregate_seconds": round(best_agg, 3),
        "screen_seconds": round(best_screen, 3),
        "sklearn_import_seconds": round(imported, 3),
        "flagged": len(result.anomalies),
    }
    print(json.dumps(summary, indent=2, sort_keys=True))
    if out:
        out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--flows", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.flows:
        return screening(args.flows, args.repeat, args.out)

    from sklearn.metrics import adjusted_rand_score

    from recommender.analysis.clustering.estimators import BehaviourClustering
    from recommender.analysis.clustering.features import communication_features

    edges, roles = generate_edges(args.workloads, args.seed)
    times: dict[str, float] = {}
    started = time.perf_counter()
    features = communication_features(edges)
    times["features"] = time.perf_counter() - started
    started = time.perf_counter()
    model = BehaviourClustering(random_state=0).fit(features.matrix, groups=features.namespaces)
    times["fit"] = time.perf_counter() - started
    started = time.perf_counter()
    explained = model.explain(features.matrix, features.feature_names, features.row_names)
    times["explain"] = time.perf_counter() - started
    total = sum(times.values())
    names = features.row_names
    generated = [i for i, name in enumerate(names) if roles.get(name, -1) >= 0]
    truth = [f"{names[i].split('/')[0]}:{roles[names[i]]}" for i in generated]
    ari = adjusted_rand_score(truth, model.labels_[generated])
    result = {
        "workloads": features.matrix.shape[0],
        "features": features.matrix.shape[1],
        "edges": edges.num_rows,
        "signatures": model.n_signatures_,
        "candidate_pairs": model.n_candidate_pairs_,
        "clusters": model.n_clusters_,
        "clusters_explained": len(explained),
        "mean_confidence": float(model.confidence_.mean()),
        "adjusted_rand_vs_roles": float(ari),
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "total_seconds": round(total, 3),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
    }
    print(
        f"{result['workloads']:,} workloads, {result['features']:,} features, "
        f"{result['signatures']:,} signatures, {result['candidate_pairs']:,} candidate pairs, "
        f"{result['clusters']:,} clusters (ARI vs roles {ari:.3f})"
    )
    for k, v in times.items():
        print(f"  {k:<10} {v:8.2f} s")
    print(f"  {'total':<10} {total:8.2f} s")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
