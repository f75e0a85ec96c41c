"""Scale: ingest and end to end at 1M-100M rows against the decode floor, with peak memory;
and synthesis plus rendering of a 10k-workload, 100k-edge graph.

    python benchmarks/bench_scale.py --rows 1000000,20000000,100000000 --formats parquet \\
        --kinds floor,e2e --out benchmarks/results/scale-parquet-bulk.json
    python benchmarks/bench_scale.py --rows 1000000 --formats calico --out ...
    python benchmarks/bench_scale.py --synthesis 10000,100000 --rows 0 --out ...

For every (format, rows), in separate subprocesses (each peak RSS its own, from ``os.wait4``):

- **floor**: Parquet - iterate ``pyarrow.parquet.ParquetFile(...).iter_batches()`` (every
  column decoded; pyarrow's default pre-buffering, whose memory grows with the file); JSON -
  read, decompress and ``msgspec.json.decode`` every line, one core;
- **floor-stream** (Parquet): the same without pre-buffering (``pre_buffer=False``): the
  streamed decode of every column, in flat memory, that the end-to-end ratio is judged against
  (``e2e/stream`` in the table; target at most 2x, peak RSS under 1 GB at 20M rows);
- **ingest**: ``recommender.iter_flow_batches(path)`` consumed to the end;
- **e2e-stream** (Parquet): end to end with the file streamed through the Parquet reader as
  Arrow batches, every column decoded (what ``recommend`` did before it let DuckDB scan
  canonical Parquet itself; same outputs), for a before/after in one run;
- **end to end**: ``recommender.recommend(path).write(tmpdir)``, the policy tree and reports
  written, with ``Recommendation.timings`` (seconds per stage) kept in the results; with
  ``--dask`` also ``engine="dask"`` on a local cluster of one worker per core.

Parquet inputs come from :func:`recommender.samples.bulk.write_bulk_parquet` (vectorised, about
6 s per million rows; ``--generator samples``: :mod:`recommender.samples.generator`, one object per
connection, as ``bench_ingest.py``), JSON inputs from :mod:`recommender.samples.generator`; fixed
seeds, cached in ``benchmarks/data/`` (see ``benchmarks/README.md``). ``--generate-only`` only makes
the inputs.

``--interleave`` runs the ``--repeat`` rounds kind after kind (floor, e2e, floor, e2e, ...)
instead of each kind's runs in a row, so that a change in the machine's load weighs on both
sides of a ratio; the fastest run of each kind counts, and every run's time is kept.

``--synthesis W,E`` builds a canonical flow table of exactly E distinct edges between W
workloads (vectorised, seeded), aggregates it, and times :func:`recommender.synthesize` and
rendering (Kubernetes manifests and the YAML stream).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_ingest import (  # noqa: E402  (a sibling script, not a package)
    DATA,
    EXTENSIONS,
    child_floor,
    child_ingest,
    ensure_data,
    input_records,
    machine,
)

#: Bump when :mod:`recommender.samples.bulk` output changes, so that cached inputs are rebuilt.
BULK_VERSION = 1


def ensure_bulk_parquet(rows: int, seed: int) -> tuple[Path, float | None]:
    """The canonical Parquet input from :func:`recommender.samples.bulk.write_bulk_parquet`,
    generated unless cached; returns (path, seconds spent)."""
    from recommender.samples.bulk import write_bulk_parquet

    path = DATA / f"parquet-bulk-{rows}-s{seed}-v{BULK_VERSION}.parquet"
    done = path.with_name(path.name + ".done")
    if path.exists() and done.exists():
        return path, None
    tmp = path.with_name(path.name + ".part")
    started = time.perf_counter()
    records = write_bulk_parquet(tmp, rows, seed=seed, source=f"bench-bulk:{rows}:seed={seed}")
    tmp.rename(path)
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"records": records, "connections": rows, "seed": seed,
                                "generator": "bulk", "seconds": round(seconds, 2)}))
    return path, seconds

# ---------------------------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------------------------


def child_floor_stream(fmt: str, path: Path) -> dict[str, Any]:
    """Every column of every row group decoded, streamed: no pre-buffering (flat memory)."""
    if fmt != "parquet":
        raise ValueError("floor-stream is for Parquet inputs")
    import pyarrow.parquet as pq

    started = time.perf_counter()
    rows = 0
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=65536):
        rows += batch.num_rows
    return {"seconds": time.perf_counter() - started, "rows": rows, "records": rows}


def child_e2e_stream(fmt: str, path: Path) -> dict[str, Any]:
    """End to end with canonical Parquet streamed through the readers as Arrow batches (every
    column decoded), as before DuckDB scanned such files itself: the same outputs, for a
    before/after comparison in one run."""
    from unittest import mock

    from recommender.aggregate import parquet_scan

    with mock.patch.object(parquet_scan, "scannable_parquet", return_value=None):
        return child_e2e(fmt, path)


def child_e2e(fmt: str, path: Path, engine: str = "embedded") -> dict[str, Any]:
    from recommender import recommend

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = recommend(path, format=fmt, engine=engine)
        result.write(tmp)
        seconds = time.perf_counter() - started
    summary = result.report["summary"]
    return {
        "seconds": seconds,
        "rows": summary["connection_rows"],
        "edges": summary["edges"],
        "policies": summary["policies"],
        "rules": summary["rules"],
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
    }


def synthetic_edges_table(workloads: int, edges: int, seed: int = 0) -> Any:
    """A canonical flow table with exactly ``edges`` distinct allowed edges (one row each)
    between ``workloads`` workloads in ``workloads // 100`` namespaces (100 per namespace).

    Each source talks to ``edges // workloads`` destinations on one of 50 ports; a tenth of the
    destinations are in another namespace. Vectorised with NumPy; the same seed gives the same
    table.
    """
    import numpy as np
    import pyarrow as pa

    from recommender.ingest.schema import FLOW_SCHEMA, conform_table

    rng = np.random.default_rng(seed)
    per = max(edges // workloads, 1)
    src = np.repeat(np.arange(workloads), per)[:edges]
    k = np.tile(np.arange(per), workloads)[:edges]
    same_ns = (src // 100) * 100
    other = rng.integers(0, workloads, size=edges)
    local = same_ns + (src % 100 + 1 + k * 7) % 100
    dst = np.where(k % 10 == 9, other, np.minimum(local, workloads - 1))
    dst = np.where(dst == src, (dst + 1) % workloads, dst)
    port = 8000 + (dst % 50)
    # Distinct (src, dst, port): drop repeats, then top up with fresh pairs on port 9000+.
    keys = src.astype(np.int64) * workloads * 100 + dst * 100 + (port - 8000)
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first)
    src, dst, port = src[keep], dst[keep], port[keep]
    missing = edges - len(src)
    if missing > 0:
        extra_src = np.arange(missing) % workloads
        src = np.concatenate([src, extra_src])
        dst = np.concatenate([dst, (extra_src + 1) % workloads])
        port = np.concatenate([port, 9000 + np.arange(missing) // workloads])
    n = len(src)
    ns = np.char.add("ns-", np.char.zfill((np.arange(workloads) // 100).astype(str), 3))
    wl = np.char.add("svc-", np.char.zfill((np.arange(workloads) % 100).astype(str), 3))
    ips = [f"10.{(i >> 8) & 255}.{i & 255}.{(i >> 16) + 10}" for i in range(workloads)]
    labels = [[("app", str(wl[i])), ("tier", f"t{i % 3}")] for i in range(workloads)]
    t0 = 1_767_600_000_000_000
    start = t0 + rng.integers(0, 86_400_000_000, size=n)
    columns: dict[str, Any] = {
        "start_time": pa.array(start).cast(pa.timestamp("us", tz="UTC")),
        "end_time": pa.array(start + 1_000_000).cast(pa.timestamp("us", tz="UTC")),
        "src_kind": pa.array(["workload"] * n),
        "dst_kind": pa.array(["workload"] * n),
        "protocol": pa.array(["TCP"] * n),
        "verdict": pa.array(["allowed"] * n),
        "is_reply": pa.array(np.zeros(n, dtype=bool)),
        "connections": pa.array(np.ones(n, dtype=np.int64)),
        "dst_port": pa.array(port.astype(np.int32)),
        "src_port": pa.array((40000 + np.arange(n) % 20000).astype(np.int32)),
    }
    for side, idx in (("src", src), ("dst", dst)):
        columns[f"{side}_namespace"] = pa.array(ns[idx].tolist())
        columns[f"{side}_workload"] = pa.array(wl[idx].tolist())
        columns[f"{side}_workload_kind"] = pa.array(["Deployment"] * n)
        columns[f"{side}_pod"] = pa.array(np.char.add(wl[idx], "-0").tolist())
        columns[f"{side}_ip"] = pa.array([ips[i] for i in idx.tolist()])
        columns[f"{side}_labels"] = pa.array([labels[i] for i in idx.tolist()],
                                             FLOW_SCHEMA.field(f"{side}_labels").type)
    table = pa.table({name: columns.get(name, pa.nulls(n, FLOW_SCHEMA.field(name).type))
                      for name in FLOW_SCHEMA.names})
    return conform_table(table)


def child_synthesis(workloads: int, edges: int) -> dict[str, Any]:
    from recommender import RecommendConfig, aggregate_edges, synthesize
    from recommender.policy.kubernetes import render_kubernetes
    from recommender.policy.writer import write_yaml_stream

    started = time.perf_counter()
    table = synthetic_edges_table(workloads, edges)
    generated = time.perf_counter()
    config = RecommendConfig(exclude_namespaces=())
    tables = aggregate_edges(table, config)
    aggregated = time.perf_counter()
    policy_set, findings = synthesize(tables, config)
    synthesized = time.perf_counter()
    text = write_yaml_stream(render_kubernetes(policy_set))
    rendered = time.perf_counter()
    return {
        "workloads": workloads,
        "edges": tables.edges.num_rows,
        "policies": len(policy_set),
        "rules": len(findings.rules),
        "yaml_bytes": len(text),
        "seconds": (synthesized - aggregated) + (rendered - synthesized),
        "generate_s": round(generated - started, 3),
        "aggregate_s": round(aggregated - generated, 3),
        "synthesize_s": round(synthesized - aggregated, 3),
        "render_s": round(rendered - synthesized, 3),
    }


def run_child(args: argparse.Namespace) -> int:
    try:
        if args.child == "synthesis":
            w, e = (int(x) for x in args.path.split(","))
            result = child_synthesis(w, e)
        elif args.child == "e2e-dask":
            result = child_e2e(args.format, Path(args.path), engine="dask")
        else:
            fn = {"floor": child_floor, "floor-stream": child_floor_stream,
                  "ingest": child_ingest, "e2e": child_e2e,
                  "e2e-stream": child_e2e_stream}[args.child]
            result = fn(args.format, Path(args.path))
    except Exception as exc:  # reported as n/a, never crashes the run
        result = {"error": f"{type(exc).__name__}: {exc}"[:600]}
    print(json.dumps(result))
    return 0


def measure(kind: str, fmt: str, path: str) -> dict[str, Any]:
    """One measurement in a fresh interpreter, with its peak RSS and CPU time (``wait4``).

    RSS is the child's own: Dask's worker processes (``e2e-dask``) are not included.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--format", fmt,
           "--path", path]
    env = dict(os.environ, PYTHONHASHSEED="0")
    load_before = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:  # a file: Dask's logs could fill a pipe
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env, cwd=ROOT)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        errors.seek(0)
        err = errors.read()
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        result = {"error": f"exit {proc.returncode}: {err.decode(errors='replace')[-600:]}"}
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    result["process_wall_s"] = round(wall, 2)
    # CPU seconds (user + sys) of the whole process: less sensitive than wall time to other
    # load on a shared machine; the load average is kept to say how shared it was.
    result["process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    result["loadavg_before"] = load_before
    result["loadavg_after"] = round(os.getloadavg()[0], 2)
    return result


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def _best(kind: str, fmt: str, path: str, repeat: int) -> dict[str, Any]:
    return _pick([measure(kind, fmt, path) for _ in range(repeat)])


def _pick(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of ``runs`` (or the last, when none succeeded), with every run's time."""
    ok = [r for r in runs if "seconds" in r]
    best = min(ok, key=lambda r: r["seconds"]) if ok else runs[-1]
    best["runs_s"] = [round(r["seconds"], 2) for r in ok]
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000000",
                        help="comma-separated connection counts (one canonical row each); 0: none")
    parser.add_argument("--formats", default="parquet",
                        help=f"comma-separated, of {', '.join(EXTENSIONS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generator", choices=("bulk", "samples"), default="bulk",
                        help="Parquet inputs: recommender.samples.bulk (vectorised, default) or "
                             "recommender.samples.generator (one object per connection, slow)")
    parser.add_argument("--generate-only", action="store_true",
                        help="generate (or find) the inputs, measure nothing")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the fastest counts")
    parser.add_argument("--kinds", default="floor,ingest,e2e",
                        help="which measurements: floor, floor-stream, ingest, e2e, "
                             "e2e-stream (comma-separated)")
    parser.add_argument("--interleave", action="store_true",
                        help="run the --repeat rounds kind after kind (floor, e2e, floor, ...)")
    parser.add_argument("--dask", action="store_true",
                        help="also end to end with --engine dask on a local cluster")
    parser.add_argument("--synthesis", default=None, metavar="W,E",
                        help="also time synthesis + rendering for W workloads and E edges")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)

    rows_list = [int(r) for r in args.rows.split(",") if int(r) > 0]
    if args.generate_only:
        args.synthesis = None
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    results: list[dict[str, Any]] = []
    for rows in rows_list:
        for fmt in formats:
            if fmt == "parquet" and args.generator == "bulk":
                path, gen_seconds = ensure_bulk_parquet(rows, args.seed)
            else:
                path, gen_seconds = ensure_data(fmt, rows, args.seed)
            if gen_seconds is not None:
                print(f"generated {path.name} in {gen_seconds:.1f} s", file=sys.stderr)
            if args.generate_only:
                continue
            entry: dict[str, Any] = {
                "format": fmt,
                "connections": rows,
                "input": str(path.relative_to(ROOT)),
                "input_bytes": path.stat().st_size,
                "input_records": input_records(path),
                "generator": args.generator if fmt == "parquet" else "samples",
            }
            kinds = [k for k in args.kinds.split(",") if k] + (["e2e-dask"] if args.dask else [])
            if args.interleave:
                runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
                for round_ in range(args.repeat):
                    for kind in kinds:
                        runs[kind].append(measure(kind, fmt, str(path)))
                        print(f"{fmt} {rows:,} {kind} (round {round_ + 1}): "
                              f"{json.dumps(runs[kind][-1])}", file=sys.stderr)
                for kind in kinds:
                    entry[kind] = _pick(runs[kind])
            else:
                for kind in kinds:
                    entry[kind] = _best(kind, fmt, str(path), args.repeat)
                    print(f"{fmt} {rows:,} {kind}: {json.dumps(entry[kind])}", file=sys.stderr)
            for base, suffix in (("floor", "ratio"), ("floor-stream", "stream_ratio")):
                floor = entry.get(base, {}).get("seconds")
                for kind in kinds:
                    s = entry[kind].get("seconds")
                    if kind != base and floor:
                        entry[f"{kind}_{suffix}"] = round(s / floor, 2) if s else None
            results.append(entry)
    synthesis = None
    if args.synthesis:
        synthesis = _best("synthesis", "-", args.synthesis, args.repeat)
        print(f"synthesis {args.synthesis}: {json.dumps(synthesis)}", file=sys.stderr)

    header = (f"{'format':8} {'rows':>11} {'floor s':>8} {'stream s':>9} {'ingest s':>9} "
              f"{'e2e s':>8} {'e2e/floor':>9} {'e2e/stream':>10} {'floor MB':>9} "
              f"{'stream MB':>9} {'ingest MB':>9} {'e2e MB':>8}")
    print(header)
    print("-" * len(header))
    for e in results:
        f, fs, i, x = (e.get(k, {"peak_rss_mb": 0})
                       for k in ("floor", "floor-stream", "ingest", "e2e"))
        print(f"{e['format']:8} {e['connections']:>11,} {f.get('seconds', 0):>8.2f} "
              f"{fs.get('seconds', 0):>9.2f} {i.get('seconds', 0):>9.2f} "
              f"{x.get('seconds', 0):>8.2f} {e.get('e2e_ratio') or 0:>9.2f} "
              f"{e.get('e2e_stream_ratio') or 0:>10.2f} {f['peak_rss_mb']:>9.0f} "
              f"{fs['peak_rss_mb']:>9.0f} {i['peak_rss_mb']:>9.0f} {x['peak_rss_mb']:>8.0f}")
        for kind in ("floor", "floor-stream", "ingest", "e2e", "e2e-dask"):
            if kind in e and "error" in e[kind]:
                print(f"    {kind} n/a: {e[kind]['error']}")
    if synthesis:
        print(f"synthesis + rendering, {args.synthesis} (workloads,edges): "
              f"{synthesis.get('seconds', float('nan')):.2f} s  {json.dumps(synthesis)}")
    report = {"benchmark": "scale", "seed": args.seed, "machine": machine(),
              "command": "python benchmarks/bench_scale.py " + " ".join(argv or sys.argv[1:]),
              "results": results, "synthesis": synthesis}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
