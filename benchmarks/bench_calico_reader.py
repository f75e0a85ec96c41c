"""Calico Enterprise JSON ingest against the floor of decoding every line once with msgspec.

    python benchmarks/bench_calico_reader.py --rows 300000 [--seed 0] [--repeat 1] [--profile]

1. Generates (or reuses) ``benchmarks/data/calico-reader-N-sS.jsonl.gz``: ``N`` connections of
   :func:`recommender.samples.generator.generate_connections` written by
   :func:`recommender.samples.generator.write_calico_jsonl` at aggregation level 0 (full 5-tuple,
   about 1.7 records per connection; gzip level 1). Deterministic for a seed.
2. **Floor**: read the file in 4 MiB chunks (gzip decompression included), split lines and
   ``msgspec.json.decode`` every line, on one core.
3. **Ingest**: ``recommender.iter_flow_batches(path, "calico")`` consumed to the end.

Both run in this process, one after the other; with ``--repeat`` they alternate and the best
of each is taken. Prints floor and ingest seconds (wall, and CPU of this process, which other
load on the machine disturbs less), their ratio, rows and records per second. ``--profile``
prints the top of a cProfile of one ingest instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
CHUNK = 4 << 20


def ensure_data(rows: int, seed: int) -> tuple[Path, int]:
    """The input file (generated unless cached) and how many records it holds."""
    path = DATA / f"calico-reader-{rows}-s{seed}.jsonl.gz"
    done = path.with_name(path.name + ".done")
    if path.exists() and done.exists():
        return path, int(json.loads(done.read_text())["records"])
    from recommender.samples.generator import generate_connections, write_calico_jsonl

    DATA.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.gz")
    started = time.perf_counter()
    conns = generate_connections(connections=rows, seed=seed)
    records = write_calico_jsonl(conns, tmp, compresslevel=1, aggregation=0)
    tmp.rename(path)
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"records": records, "connections": rows, "seed": seed}))
    print(f"generated {path.name} ({records} records) in {seconds:.1f} s", file=sys.stderr)
    return path, records


def floor(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds to decompress, split and ``msgspec.json.decode`` every line."""
    from bench_ingest import decode_every_line  # the same floor as the ingest benchmark

    started, cpu = time.perf_counter(), time.process_time()
    decode_every_line(path)
    return time.perf_counter() - started, time.process_time() - cpu


def ingest(path: Path) -> tuple[float, float, int, int]:
    """Wall and CPU seconds, canonical rows and records read by the Calico reader."""
    from recommender import iter_flow_batches

    started, cpu = time.perf_counter(), time.process_time()
    batches = iter_flow_batches(path, "calico")
    rows = sum(batch.num_rows for batch in batches)
    return time.perf_counter() - started, time.process_time() - cpu, rows, batches.ledger.read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000, help="connections to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    parser.add_argument("--profile", action="store_true", help="cProfile one ingest")
    args = parser.parse_args(argv)

    path, records = ensure_data(args.rows, args.seed)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(ingest, path)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0
    floors, ingests = [], []
    for _ in range(args.repeat):  # alternate, so that a burst of other load hits both alike
        floors.append(floor(path))
        ingests.append(ingest(path))
    floor_s, floor_cpu = min(f[0] for f in floors), min(f[1] for f in floors)
    ingest_s, ingest_cpu = min(i[0] for i in ingests), min(i[1] for i in ingests)
    _, _, rows, read = ingests[0]
    print(f"input        {path.relative_to(HERE.parent)} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"records      {read} (generated {records})")
    print(f"rows         {rows}")
    print(f"floor s      {floor_s:.3f}  (cpu {floor_cpu:.3f})")
    print(f"ingest s     {ingest_s:.3f}  (cpu {ingest_cpu:.3f})")
    print(f"ratio        {ingest_s / floor_s:.2f}  (cpu {ingest_cpu / floor_cpu:.2f})")
    print(f"rows/s       {rows / ingest_s:,.0f}")
    print(f"records/s    {read / ingest_s:,.0f}")
    print(f"us/record    {ingest_s / read * 1e6:.2f} (floor {floor_s / read * 1e6:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
