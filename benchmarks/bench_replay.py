"""Replay cost against the aggregation it starts with.

    python benchmarks/bench_replay.py --rows 1000000 [--seed 0] [--repeat 3] [--out FILE.json]

1. Generates ``--rows`` connections as canonical Parquet with :mod:`recommender.samples.generator`
   (``generate_connections`` + ``write_canonical_parquet``), cached in ``benchmarks/data/`` under
   the same names as ``bench_ingest.py`` uses, so either script reuses the other's input.
2. Reads the table into memory once, recommends policies from it (not timed), then times, on the
   same table, best of ``--repeat``:

   - ``aggregate_edges(table)`` alone;
   - ``replay(policies, table)``, which aggregates and then evaluates every distinct edge
     (over-permissiveness at its default limit; ``--synthetic-limit`` changes it).

3. Prints both and their ratio; the target is replay within 2x the aggregation (at 20M rows).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_ingest import best_of, ensure_data  # noqa: E402  (the shared, cached input generator)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--synthetic-limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from recommender.aggregate.edges import aggregate_edges
    from recommender.evaluation.replay import replay
    from recommender.pipeline import recommend

    path, generated = ensure_data("parquet", args.rows, args.seed)
    if generated is not None:
        print(f"generated {path.name} in {generated:.1f} s")
    table = pq.read_table(path)
    print(f"{table.num_rows:,} rows from {path.name}")
    started = time.perf_counter()
    policies = recommend(table).policy_set
    print(f"recommended {len(policies)} policies in {time.perf_counter() - started:.2f} s")

    extra = {} if args.synthetic_limit is None else {"synthetic_limit": args.synthetic_limit}
    agg_s, tables = best_of(lambda: aggregate_edges(table), args.repeat)
    replay_s, coverage = best_of(lambda: replay(policies, table, **extra), args.repeat)
    ratio = replay_s / agg_s
    print(f"aggregate_edges: {agg_s:8.3f} s ({tables.edges.num_rows:,} edges)")
    print(
        f"replay:          {replay_s:8.3f} s  (coverage {coverage.coverage:.4f}, "
        f"{coverage.observed_edges:,} edges judged)"
    )
    print(f"ratio replay / aggregation: {ratio:.2f}  (target <= 2)")
    if args.out:
        result = {
            "rows": table.num_rows,
            "seed": args.seed,
            "repeat": args.repeat,
            "aggregate_seconds": round(agg_s, 4),
            "replay_seconds": round(replay_s, 4),
            "ratio": round(ratio, 3),
            "edges": tables.edges.num_rows,
            "coverage": coverage.coverage,
            "machine": {
                "nproc": os.cpu_count(),
                "python": platform.python_version(),
                "pyarrow": pa.__version__,
            },
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
