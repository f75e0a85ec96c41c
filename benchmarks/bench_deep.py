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
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_end_to_end import compile_sources, ensure_input, run  # noqa: E402
from bench_wide import slope  # noqa: E402


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
    peer = shutil.which("hubble-audit2policy")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-deep-", dir=args.workdir))
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {
        n: {"recommend": [], "hubble-audit2policy": []} for n in sizes
    }
    try:
        for _ in range(max(args.repeat, 1)):
            for n, path in paths.items():
                with path.open("rb") as fh:  # warm the page cache, so no tool pays for the disk
                    while fh.read(1 << 24):
                        pass
                commands = {
                    "recommend": [sys.executable, "-m", "recommender", str(path), "-o",
                                  str(work / "ours")],
                    "hubble-audit2policy": [peer, str(path), "-o", str(work / "peer"),
                                            "--no-enrich"] if peer else None,
                }
                for name, command in commands.items():
                    if command is None:
                        continue
                    shutil.rmtree(work / "ours", ignore_errors=True)
                    shutil.rmtree(work / "peer", ignore_errors=True)
                    result = run(command)
                    runs[n][name].append(result)
                    print(f"{n:>8} connections {name:<20} {result['seconds']:>8.2f} s "
                          f"{result['peak_rss_mb']:>7.0f} MB  exit {result['exit']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for n in sizes:
        row: dict[str, Any] = {"connections": n, "input_bytes": paths[n].stat().st_size}
        for name, results in runs[n].items():
            if not results:
                row[name] = None
                continue
            best = min(results, key=lambda r: r["seconds"])
            row[name] = {**best, "runs": len(results),
                         "seconds_median": median(r["seconds"] for r in results),
                         "peak_rss_mb_max": max(r["peak_rss_mb"] for r in results)}
        ours, theirs = row["recommend"], row["hubble-audit2policy"]
        if ours and theirs:
            row["peer_vs_recommend"] = round(theirs["seconds"] / ours["seconds"], 2)
        rows.append(row)
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
