"""The communication graph at scale: build, layout, SVG and HTML for 10,000 workloads.

    python benchmarks/bench_graph.py --workloads 10000 [--seed 0] [--repeat 3] [--out FILE.json]

1. Generates an edge table (the columns of ``EdgeTables.edges`` and ``.denied``) in memory:
   ``--workloads`` workloads in namespaces of 50, each calling 3 peers (mostly in its own
   namespace, sometimes the next one), the cluster DNS, and 1 in 10 a public address; 1 in 20
   has a denied edge. No flow reading or aggregation is timed: that is ``bench_replay.py``.
2. Times, best of ``--repeat`` (each step on the previous step's result):

   - ``graph_from_edges`` (the networkx graph, labels included);
   - ``layout_graph`` (the grid layout, collapse of big outside groups);
   - ``render_svg`` from that layout, ``graph_html`` (its layout runs in the browser), and the
     GraphML / JSON writers;
   - ``propose_segments`` (shared services, seeded Louvain, cross-segment flows).

3. Prints a table; the target is build + layout + SVG/HTML in seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _best(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """Best wall and CPU seconds of ``repeat`` runs (CPU time is what a loaded, shared
    machine distorts least), and the result."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu, result


def edge_tables(workloads: int, seed: int) -> tuple[Any, Any, Any]:
    """Allowed edges, denied edges and workload labels for ``workloads`` workloads."""
    import pyarrow as pa

    rng = random.Random(seed)
    per_ns = 50
    t0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
    names = [(f"ns{i // per_ns:04d}", f"w{i:05d}") for i in range(workloads)]
    allowed: list[dict[str, Any]] = []
    denied: list[dict[str, Any]] = []

    def row(src: tuple[str, str] | None, dst: tuple[str, str] | None, port: int,
            ext: str | None = None, proto: str = "TCP") -> dict[str, Any]:  # fmt: skip
        first = t0 + timedelta(seconds=rng.randrange(3600))
        out = {
            "src_kind": "workload", "src_namespace": src[0] if src else None,
            "src_id": src[1] if src else None, "src_name": None,
            "dst_kind": "workload" if dst else "external",
            "dst_namespace": dst[0] if dst else None, "dst_id": dst[1] if dst else ext,
            "dst_name": None, "protocol": proto, "dst_port": port,
            "connections": rng.randrange(1, 500), "rows": 1, "bytes": rng.randrange(10**6),
            "first_seen": first, "last_seen": first + timedelta(minutes=rng.randrange(1, 600)),
            "windows": rng.randrange(1, 10), "src_workload_kind": "Deployment",
            "dst_workload_kind": "Deployment" if dst else None,
        }  # fmt: skip
        return out

    dns = ("kube-system", "coredns")
    for i, src in enumerate(names):
        base = (i // per_ns) * per_ns
        for _ in range(3):
            if rng.random() < 0.9:
                j = base + rng.randrange(per_ns)
            else:
                j = base + per_ns + rng.randrange(per_ns)
            if j < workloads and j != i:
                allowed.append(row(src, names[j], rng.choice((80, 8080, 5432, 6379))))
        allowed.append(row(src, dns, 53, proto="UDP"))
        if i % 10 == 0:
            allowed.append(row(src, None, 443, ext=f"203.0.113.{rng.randrange(256)}"))
        if i % 20 == 0:
            denied.append(row(src, names[rng.randrange(workloads)], 22))
    labels = pa.table({
        "namespace": [n for n, _ in names],
        "workload": [w for _, w in names],
        "labels": pa.array([[("app", w), ("team", n)] for n, w in names],
                           pa.map_(pa.string(), pa.string())),
    })  # fmt: skip
    return pa.Table.from_pylist(allowed), pa.Table.from_pylist(denied), labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import networkx as nx

    from recommender.analysis.graph import graph_from_edges
    from recommender.analysis.segments import propose_segments
    from recommender.report.graph_html import graph_html
    from recommender.report.graph_io import graph_graphml, graph_json
    from recommender.report.graph_svg import layout_graph, render_svg

    edges, denied, labels = edge_tables(args.workloads, args.seed)
    steps: dict[str, dict[str, Any]] = {}
    t, c, g = _best(lambda: graph_from_edges(edges, denied, labels), args.repeat)
    steps["build"] = {"seconds": t, "cpu_seconds": c}
    t, c, lay = _best(lambda: layout_graph(g), args.repeat)
    steps["layout"] = {"seconds": t, "cpu_seconds": c}
    t, c, svg = _best(lambda: render_svg(lay), args.repeat)
    steps["svg"] = {"seconds": t, "cpu_seconds": c, "bytes": len(svg.encode())}
    t, c, page = _best(lambda: graph_html(g), args.repeat)
    steps["html (busiest 1,000 nodes; laid out in the browser)"] = {
        "seconds": t,
        "cpu_seconds": c,
        "bytes": len(page.encode()),
    }
    t, c, data = _best(lambda: graph_graphml(g), 1)
    steps["graphml"] = {"seconds": t, "cpu_seconds": c, "bytes": len(data)}
    t, c, text = _best(lambda: graph_json(g), 1)
    steps["json"] = {"seconds": t, "cpu_seconds": c, "bytes": len(text.encode())}
    t, c, proposal = _best(lambda: propose_segments(g), 1)
    steps["segments (louvain)"] = {
        "seconds": t,
        "cpu_seconds": c,
        "segments": len(proposal.segments),
        "modularity": round(proposal.modularity, 4),
    }
    total = sum(steps[k]["seconds"] for k in ("build", "layout", "svg"))
    total_cpu = sum(steps[k]["cpu_seconds"] for k in ("build", "layout", "svg"))
    result = {
        "workloads": args.workloads,
        "nodes": g.number_of_nodes(),
        "edges": g.number_of_edges(),
        "edge_rows": edges.num_rows + denied.num_rows,
        "steps": steps,
        "build_layout_svg_seconds": total,
        "build_layout_svg_cpu_seconds": total_cpu,
        "machine": {
            "python": platform.python_version(),
            "networkx": nx.__version__,
            "cpu": platform.processor() or platform.machine(),
        },
    }
    print(f"{args.workloads:,} workloads: {result['nodes']:,} nodes, {result['edges']:,} edges")
    print(f"{'step':<24} {'wall s':>8} {'CPU s':>8}  notes")
    for name, step in steps.items():
        notes = ", ".join(f"{k} {v:,}" for k, v in step.items() if not k.endswith("seconds"))
        print(f"{name:<24} {step['seconds']:>8.2f} {step['cpu_seconds']:>8.2f}  {notes}")
    print(f"{'build + layout + svg':<24} {total:>8.2f} {total_cpu:>8.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
