"""Wide shape: rows fixed, workloads growing; ``recommend`` against hubble-audit2policy.

    python benchmarks/bench_wide.py [--sizes 100:5,500:10,2000:40,8000:160,10000:200]
                                    [--connections 20000] [--seed 0] [--repeat 2]
                                    [--out benchmarks/results/wide.json]

Input: for each size ``WORKLOADS:NAMESPACES``, :func:`recommender.samples.wide.wide_scenario`
(about 5 edges per workload: calls to other workloads, a fifth of them across namespaces, and
the DNS) and the project's generator write the Hubble events of ``--connections`` connections
(fixed across sizes) as plain JSON lines in ``benchmarks/data/`` (cached by size and seed).

For each size, in turn and ``--repeat`` times (interleaved, so a change of load hits both):

- **recommend**: ``python -m recommender FILE -o DIR`` (everything: ingest, aggregation,
  screening, synthesis, self-check, reports, files);
- **hubble-audit2policy** (the peer, ``pip install -e '.[bench]'``):
  ``hubble-audit2policy FILE -o DIR --no-enrich``.

Each run is its own process (imports included); wall and CPU seconds and peak RSS come from
``os.wait4`` (``bench_end_to_end.run``). The fastest run of each tool and size counts. The
script prints a table and the fitted log-log slope of time against workloads for each tool
(1.0: linear; 2.0: quadratic), and writes them as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_end_to_end import compile_sources, run  # noqa: E402

DATA = HERE / "data"
DATA_VERSION = 1
DEFAULT_SIZES = "100:5,500:10,2000:40,8000:160,10000:200"


def ensure_input(workloads: int, namespaces: int, connections: int, seed: int) -> Path:
    """The plain JSON-lines Hubble file of one wide size (generated once)."""
    name = f"hubble-wide-{workloads}w-{namespaces}ns-{connections}-s{seed}-v{DATA_VERSION}"
    path = DATA / f"{name}.jsonl"
    if path.is_file():
        return path
    from recommender.samples import generate_connections, write_hubble_jsonl
    from recommender.samples.wide import wide_scenario

    DATA.mkdir(parents=True, exist_ok=True)
    scenario = wide_scenario(workloads, namespaces, seed=seed)
    tmp = path.with_suffix(".part")
    write_hubble_jsonl(generate_connections(scenario, connections=connections, seed=seed), tmp,
                       seed=seed, scenario=scenario)
    tmp.replace(path)
    return path


def slope(xs: list[float], ys: list[float]) -> float | None:
    """The least-squares slope of log(y) against log(x)."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return round(sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / den, 2)


def new_file_ms(folder: Path, n: int = 500) -> float:
    """Milliseconds to create, write and close one new small file under ``folder`` (the mean of
    ``n``): both tools write one file per policy, and this cost differs by two orders of
    magnitude between folders of the same disk on some machines (see docs/performance.md)."""
    probe = folder / "probe"
    probe.mkdir()
    started = time.perf_counter()
    for i in range(n):
        fd = os.open(probe / f"f{i}.yaml", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        os.write(fd, b"x" * 600)
        os.close(fd)
    seconds = time.perf_counter() - started
    shutil.rmtree(probe)
    return seconds * 1000 / n


def run_both(
    paths: dict[Any, Path], work: Path, repeat: int, label: Callable[[Any], str]
) -> dict[Any, dict[str, list[dict[str, Any]]]]:
    """Run ``recommend FILE -o DIR`` and the peer on each input in turn, ``repeat`` rounds,
    writing under ``work``; each run's :func:`bench_end_to_end.run` result, by input and tool.
    ``label`` names an input in the progress lines."""
    peer = shutil.which("hubble-audit2policy")
    runs: dict[Any, dict[str, list[dict[str, Any]]]] = {
        key: {"recommend": [], "hubble-audit2policy": []} for key in paths
    }
    for _ in range(max(repeat, 1)):
        for key, path in paths.items():
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
                runs[key][name].append(result)
                print(f"{label(key)} {name:<20} {result['seconds']:>8.2f} s "
                      f"{result['peak_rss_mb']:>7.0f} MB  exit {result['exit']}", flush=True)
    return runs


def summarise(row: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``row`` with each tool's fastest run (and its medians, minima and maxima) and the
    peer's time over ours."""
    for name, results in runs.items():
        if not results:
            row[name] = None
            continue
        best = min(results, key=lambda r: r["seconds"])
        row[name] = {
            **best,
            "runs": len(results),
            "seconds_min": best["seconds"],
            "seconds_median": median(r["seconds"] for r in results),
            "cpu_seconds_min": min(r["cpu_seconds"] for r in results),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in results),
        }
    ours, theirs = row["recommend"], row["hubble-audit2policy"]
    if ours and theirs:
        row["peer_vs_recommend"] = round(theirs["seconds"] / ours["seconds"], 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help="comma-separated WORKLOADS:NAMESPACES")
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workdir", type=Path,
                        help="folder both tools write their outputs under (default: the system "
                             "temporary folder); its cost per new file is measured and recorded")
    args = parser.parse_args(argv)

    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",")]
    paths = {size: ensure_input(size[0], size[1], args.connections, args.seed) for size in sizes}
    compile_sources()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-wide-", dir=args.workdir))
    per_file_ms = new_file_ms(work)
    print(f"outputs under {work}: {per_file_ms:.3f} ms per new file", flush=True)
    try:
        runs = run_both(paths, work, args.repeat, lambda size: f"{size[0]:>6} workloads")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for size in sizes:
        row: dict[str, Any] = {
            "workloads": size[0],
            "namespaces": size[1],
            "input": str(paths[size].relative_to(HERE.parent)),
            "input_bytes": paths[size].stat().st_size,
        }
        rows.append(summarise(row, runs[size]))

    slopes: dict[str, float | None] = {}
    for name in ("recommend", "hubble-audit2policy"):
        points = [(r["workloads"], r[name]["seconds"]) for r in rows if r.get(name)]
        slopes[name] = slope([p[0] for p in points], [p[1] for p in points])
        cpu = [(r["workloads"], r[name]["cpu_seconds_min"]) for r in rows if r.get(name)]
        slopes[name + " (cpu)"] = slope([p[0] for p in cpu], [p[1] for p in cpu])
    summary = {
        "benchmark": "wide",
        "connections": args.connections,
        "seed": args.seed,
        "repeat": args.repeat,
        "command": "python benchmarks/bench_wide.py " + " ".join(sys.argv[1:] if argv is None
                                                               else argv),
        "workdir": {"path": str(work.parent), "new_file_ms": round(per_file_ms, 3)},
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_average_at_end": list(os.getloadavg())},
        "sizes": rows,
        "loglog_slope_seconds_vs_workloads": slopes,
    }
    print(f"\n{'workloads':>9} {'ns':>4} {'MB':>5} {'recommend s':>12} {'RSS MB':>7} "
          f"{'peer s':>8} {'RSS MB':>7} {'peer/ours':>9}")
    for r in rows:
        ours, theirs = r["recommend"], r["hubble-audit2policy"]
        print(f"{r['workloads']:>9} {r['namespaces']:>4} {r['input_bytes'] / 1e6:>5.0f} "
              f"{ours['seconds']:>12.2f} {ours['peak_rss_mb_max']:>7.0f} "
              + (f"{theirs['seconds']:>8.2f} {theirs['peak_rss_mb_max']:>7.0f} "
                 f"{r['peer_vs_recommend']:>9.2f}" if theirs else "  (peer not installed)"))
    print("log-log slope of seconds against workloads:", slopes)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
