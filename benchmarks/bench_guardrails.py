"""Cost of synthesis under guardrails: ``recommend`` with and without ``guardrails=``.

    python benchmarks/bench_guardrails.py --rows 1000000 [--seed 0] [--repeat 1] [--out FILE.json]

Reads the cached canonical Parquet input of ``bench_ingest.py`` (generated on first use) into
memory once, then times, best of ``--repeat``, ``recommend(table)`` and
``recommend(table, guardrails=docs/examples/guardrails.yaml)``: the difference is judging every
evidence edge against the admin guardrails, the compliance probes and the self-check on the
whole stack. Prints both, their ratio, the edges and the conflicts.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_ingest import best_of, ensure_data  # noqa: E402  (the shared, cached input generator)

EXAMPLE = HERE.parent / "docs" / "examples" / "guardrails.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from recommender import load_guardrails, read_flows, recommend

    path, _ = ensure_data("parquet", args.rows, args.seed)
    table = read_flows(path)
    guardrails = load_guardrails(EXAMPLE)
    plain_s, plain = best_of(lambda: recommend(table), args.repeat)
    guarded_s, guarded = best_of(lambda: recommend(table, guardrails=guardrails), args.repeat)
    result = {
        "rows": args.rows,
        "edges": plain.edges.num_rows,
        "recommend_s": round(plain_s, 2),
        "recommend_with_guardrails_s": round(guarded_s, 2),
        "ratio": round(guarded_s / plain_s, 2),
        "conflicts": guarded.report["guardrails"]["conflicts_total"],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
