"""What the Calico and Cilium dialects cost on top of a Kubernetes recommendation.

    python benchmarks/bench_dialects.py --rows 1000000 [--seed 0] [--repeat 3] [--out FILE.json]

1. Generates ``--rows`` connections as canonical Parquet (cached in ``benchmarks/data/``, shared
   with ``bench_ingest.py``) and reads it into memory once.
2. Times, best of ``--repeat``: ``aggregate_edges`` (which now also keeps the bounded list of
   HTTP requests per edge), ``recommend`` (aggregation, synthesis, report), then on that
   recommendation the Kubernetes rendering, the evidence enrichment
   (``Recommendation.dialect_policy_set``, computed once per recommendation) and the Calico and
   Cilium renderings.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_ingest import best_of, ensure_data  # noqa: E402  (the shared, cached input generator)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq

    from recommender.aggregate.edges import aggregate_edges
    from recommender.pipeline import dialect_options, recommend
    from recommender.policy.dialects import render_dialect
    from recommender.synthesis.enrich import enrich_policy_set

    path, _ = ensure_data("parquet", args.rows, args.seed)
    table = pq.read_table(path)
    results: dict[str, Any] = {"rows": args.rows, "machine": platform.platform()}
    results["aggregate_s"], tables = best_of(lambda: aggregate_edges(table), args.repeat)
    results["recommend_s"], rec = best_of(lambda: recommend(table), args.repeat)
    options = dialect_options(rec.config)
    results["kubernetes_s"], k8s = best_of(
        lambda: render_dialect(rec.policy_set, "kubernetes"), args.repeat
    )
    results["enrich_s"], enriched = best_of(
        lambda: enrich_policy_set(rec.policy_set, rec.tables, rec.findings.selectors), args.repeat
    )
    results["calico_s"], calico = best_of(
        lambda: render_dialect(enriched, "calico", options), args.repeat
    )
    results["cilium_s"], cilium = best_of(
        lambda: render_dialect(enriched, "cilium", options), args.repeat
    )
    results["edges"] = tables.edges.num_rows
    results["policies"] = len(rec.policy_set)
    results["manifests"] = {"kubernetes": len(k8s), "calico": len(calico), "cilium": len(cilium)}
    text = json.dumps(results, indent=2, sort_keys=True)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
