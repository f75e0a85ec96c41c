"""Deep shape: workloads fixed, rows growing; ``recommend`` against hubble-audit2policy.

    pip install -e '.[bench]'          # hubble-audit2policy, the peer
    python benchmarks/bench_deep.py --connections 25000,50000,100000,200000 \\
        --out benchmarks/results/deep-hubble.json

The other direction of :mod:`bench_wide`: the end-to-end scenario of :mod:`bench_end_to_end`
(the same services, 53 edges) drawn for more and more connections, as plain Hubble JSON lines
(about 5.4 KB per connection), cached in ``benchmarks/data/``. For each size both tools run in
turn, ``--repeat`` times, each in its own process (wall and CPU seconds with their reader
processes, peak RSS); the fastest run counts. The script prints the table and the fitted
log-log slope of seconds against connections per tool (1: linear in the rows) and writes them
as JSON. Outputs go under ``--workdir`` (default: the system temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_end_to_end import compile_sources, ensure_input  # noqa: E402
from bench_wide import run_both, slope, summarise  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="25000,50000,100000,200000",
                        help="comma-separated connection counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    sizes = [int(x) for x in args.connections.split(",")]
    paths = {n: ensure_input(n, args.seed) for n in sizes}
    compile_sources()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-deep-", dir=args.workdir))
    try:
        runs = run_both(paths, work, args.repeat, lambda n: f"{n:>8} connections")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        summarise({"connections": n, "input_bytes": paths[n].stat().st_size}, runs[n])
        for n in sizes
    ]
    slopes = {}
    for name in ("recommend", "hubble-audit2policy"):
        points = [(r["connections"], r[name]["seconds"]) for r in rows if r.get(name)]
        slopes[name] = slope([p[0] for p in points], [p[1] for p in points])
    summary = {
        "benchmark": "deep",
        "seed": args.seed,
        "repeat": args.repeat,
        "command": "python benchmarks/bench_deep.py " + " ".join(sys.argv[1:] if argv is None
                                                               else argv),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_average_at_end": list(os.getloadavg())},
        "sizes": rows,
        "loglog_slope_seconds_vs_connections": slopes,
    }
    print()
    print(f"{'connections':>11} {'MB':>6} {'recommend s':>12} {'RSS MB':>7} {'peer s':>8} "
          f"{'RSS MB':>7} {'peer/ours':>9}")
    for r in rows:
        ours, theirs = r["recommend"], r["hubble-audit2policy"]
        print(f"{r['connections']:>11} {r['input_bytes'] / 1e6:>6.0f} {ours['seconds']:>12.2f} "
              f"{ours['peak_rss_mb_max']:>7.0f} "
              + (f"{theirs['seconds']:>8.2f} {theirs['peak_rss_mb_max']:>7.0f} "
                 f"{r['peer_vs_recommend']:>9.2f}" if theirs else ""))
    print(f"log-log slope of seconds against connections: {slopes}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
