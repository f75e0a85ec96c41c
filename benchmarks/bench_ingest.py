"""Ingest throughput against the floor of merely decoding the input, per format.

    python benchmarks/bench_ingest.py --rows 1000000 [--formats hubble,calico,parquet]
                                      [--seed 0] [--out benchmarks/results/ingest-1M.json]

1. Generates the input into ``benchmarks/data/`` with :mod:`recommender.samples.generator` (the same
   connections in each format; cached by rows and seed, so a second run starts at once).
2. For each format, runs in separate subprocesses (so each peak RSS is its own, from
   ``os.wait4``):

   - the **floor**: JSON - read the file in 4 MiB chunks (gzip decompression included), split
     lines, ``msgspec.json.decode`` each line, on one core; Parquet - iterate the record batches
     of ``pyarrow.parquet.ParquetFile``;
   - the **ingest**: ``recommender.iter_flow_batches(path)`` consumed to the end (and, with
     ``--cli``, ``recommend ingest PATH -o OUT.parquet``);
   - for Hubble, also **ingest-python**: the same with ``RECOMMENDER_NO_SCANNER=1`` (the reader
     without its compiled scanner).

   With ``--repeat N`` the measurements run N times, interleaved (floor, ingest, floor, ...), so
   that changing load on a shared machine hits each alike; each keeps its fastest run, and the
   JSON also holds the minimum and median wall and CPU (user + sys) seconds of the N runs.
3. Prints a table and writes JSON: rows, input bytes and records, floor and ingest seconds, their
   ratio, peak RSS, rows per second, and the machine (nproc, CPU, Python, pyarrow, msgspec).

A reader that fails (not written yet, say) is reported as ``n/a`` with its error. CPU only;
seeds are fixed. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
EXTENSIONS = {"hubble": "jsonl.gz", "calico": "jsonl.gz", "parquet": "parquet"}
CHUNK = 4 << 20
#: Bump when the generator's output changes, so that cached inputs are rebuilt.
DATA_VERSION = 2


# ---------------------------------------------------------------------------------------------
# input generation (cached)
# ---------------------------------------------------------------------------------------------


def best_of(fn: Any, repeat: int) -> tuple[float, Any]:
    """The fastest of ``repeat`` calls of ``fn`` (seconds) and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def data_path(fmt: str, rows: int, seed: int) -> Path:
    return DATA / f"{fmt}-{rows}-s{seed}-v{DATA_VERSION}.{EXTENSIONS[fmt]}"


def ensure_data(fmt: str, rows: int, seed: int) -> tuple[Path, float | None]:
    """The input file for ``fmt``, generated unless cached; returns (path, seconds spent)."""
    from recommender.samples.generator import (
        generate_connections,
        write_calico_jsonl,
        write_canonical_parquet,
        write_hubble_jsonl,
    )

    path = data_path(fmt, rows, seed)
    done = path.with_name(path.name + ".done")
    if path.exists() and done.exists():
        return path, None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp_gz = path.with_name(path.name + ".part.gz")
    started = time.perf_counter()
    conns = generate_connections(connections=rows, seed=seed)
    if fmt == "hubble":
        records = write_hubble_jsonl(conns, tmp_gz, seed=seed, compresslevel=1)
        tmp_gz.rename(path)
    elif fmt == "calico":
        # aggregation level 0 (full 5-tuple): about two records per connection, so that the
        # reader sees as many records as the other formats (level 2 folds 100k into ~3k).
        records = write_calico_jsonl(conns, tmp_gz, compresslevel=1, aggregation=0)
        tmp_gz.rename(path)
    else:
        records = write_canonical_parquet(conns, tmp, source=f"bench:{rows}:seed={seed}")
        tmp.rename(path)
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"records": records, "connections": rows, "seed": seed,
                                "seconds": round(seconds, 2)}))
    return path, seconds


def input_records(path: Path) -> int | None:
    done = path.with_name(path.name + ".done")
    try:
        return int(json.loads(done.read_text())["records"])
    except (OSError, ValueError, KeyError):
        return None


# ---------------------------------------------------------------------------------------------
# children: one measurement each
# ---------------------------------------------------------------------------------------------


def decode_every_line(path: Path) -> int:
    """The JSON floor: decompress, split and ``msgspec.json.decode`` every line; the count."""
    import msgspec
    import pyarrow as pa

    decode = msgspec.json.decode
    records = 0
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    raw = pa.OSFile(str(path), "rb")
    fh = pa.CompressedInputStream(raw, "gzip") if gz else raw
    rest = b""
    while True:
        block = fh.read(CHUNK)
        if not block:
            break
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line:
                decode(line)
                records += 1
    if rest.strip():
        decode(rest)
        records += 1
    fh.close()
    return records


def child_floor(fmt: str, path: Path) -> dict[str, Any]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        started = time.perf_counter()
        rows = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
            rows += batch.num_rows
        return {"seconds": time.perf_counter() - started, "rows": rows, "records": rows}
    started = time.perf_counter()
    records = decode_every_line(path)
    return {"seconds": time.perf_counter() - started, "rows": records, "records": records}


def child_ingest(fmt: str, path: Path, workers: int | None = None) -> dict[str, Any]:
    from recommender import iter_flow_batches

    started = time.perf_counter()
    batches = iter_flow_batches(path, fmt, workers=workers)
    rows = 0
    connections = 0
    for batch in batches:
        rows += batch.num_rows
        connections += sum(batch.column("connections").to_pylist())
    seconds = time.perf_counter() - started
    ledger = batches.ledger
    return {"seconds": seconds, "rows": rows, "records": ledger.read, "connections": connections}


def child_cli(fmt: str, path: Path) -> dict[str, Any]:
    exe = shutil.which("recommend")
    if exe is None:
        raise RuntimeError("the `recommend` command is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "flows.parquet"
        started = time.perf_counter()
        proc = subprocess.run([exe, "ingest", str(path), "--format", fmt, "-o", str(out)],
                              capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"recommend ingest exited {proc.returncode}: "
                               f"{(proc.stderr or proc.stdout).strip()[-400:]}")
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(out).metadata.num_rows
    return {"seconds": seconds, "rows": rows}


def run_child(args: argparse.Namespace) -> int:
    fn = {"floor": child_floor, "ingest": child_ingest, "cli": child_cli}[args.child]
    try:
        if args.child == "ingest":
            result: dict[str, Any] = child_ingest(args.format, Path(args.path), args.workers)
        else:
            result = fn(args.format, Path(args.path))
    except Exception as exc:  # report any failure as n/a, never crash the whole run
        result = {"error": f"{type(exc).__name__}: {exc}"[:600]}
    print(json.dumps(result))
    return 0


def measure(kind: str, fmt: str, path: Path, workers: int | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; add its peak RSS (MB) from ``wait4``."""
    child = "ingest" if kind == "ingest-python" else kind
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", child, "--format", fmt,
           "--path", str(path)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONHASHSEED="0")
    if kind == "ingest-python":
        env["RECOMMENDER_NO_SCANNER"] = "1"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        result = {"error": f"exit {proc.returncode}: {err.decode(errors='replace')[-600:]}"}
    # ru_maxrss is in KiB on Linux
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    return result


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run, with the min and median wall and CPU seconds of all runs."""
    ok = [r for r in runs if "seconds" in r]
    if not ok:
        return runs[0]
    best = dict(min(ok, key=lambda r: r["seconds"]))
    walls = sorted(r["seconds"] for r in ok)
    cpus = sorted(r["cpu_seconds"] for r in ok)
    best["runs"] = len(ok)
    best["seconds_min"], best["seconds_median"] = round(walls[0], 3), round(median(walls), 3)
    best["cpu_seconds_min"], best["cpu_seconds_median"] = round(cpus[0], 3), round(median(cpus), 3)
    return best


def machine() -> dict[str, Any]:
    import msgspec
    import pyarrow

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "msgspec": msgspec.__version__,
    }


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "n/a"
    return format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000,
                        help="connections to generate (one canonical row each)")
    parser.add_argument("--formats", default="hubble,calico,parquet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--cli", action="store_true",
                        help="also time `recommend ingest PATH -o OUT.parquet`")
    parser.add_argument("--repeat", type=int, default=1,
                        help="interleaved runs of each measurement; the fastest counts")
    parser.add_argument("--workers", type=int, default=None,
                        help="Hubble reader processes (default: the reader's own choice)")
    parser.add_argument("--no-python", action="store_true",
                        help="skip the Hubble reader without its compiled scanner")
    parser.add_argument("--child", choices=("floor", "ingest", "cli"), help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in EXTENSIONS]
    if unknown:
        parser.error(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(EXTENSIONS)}")
    results: list[dict[str, Any]] = []
    for fmt in formats:
        path, gen_seconds = ensure_data(fmt, args.rows, args.seed)
        if gen_seconds is not None:
            print(f"generated {path.relative_to(ROOT)} in {gen_seconds:.1f} s", file=sys.stderr)
        kinds = ["floor", "ingest"]
        if fmt == "hubble" and not args.no_python:
            kinds.append("ingest-python")
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for _ in range(max(args.repeat, 1)):
            for kind in kinds:
                runs[kind].append(measure(kind, fmt, path, args.workers))
        best = {k: _summarise(v) for k, v in runs.items()}
        floor, ingest = best["floor"], best["ingest"]
        entry: dict[str, Any] = {
            "format": fmt,
            "input": str(path.relative_to(ROOT)),
            "input_bytes": path.stat().st_size,
            "input_records": input_records(path),
            "connections": args.rows,
            "floor": floor,
            "ingest": ingest,
        }
        if "ingest-python" in best:
            entry["ingest_python"] = best["ingest-python"]
            p_s = best["ingest-python"].get("seconds")
            entry["python_ratio"] = round(p_s / floor["seconds"], 2) if p_s and floor.get(
                "seconds") else None
        entry["repeat"] = max(args.repeat, 1)
        entry["workers"] = args.workers
        if args.cli:
            entry["cli"] = measure("cli", fmt, path)
        f_s, i_s = floor.get("seconds"), ingest.get("seconds")
        entry["rows"] = ingest.get("rows")
        entry["ratio"] = round(i_s / f_s, 2) if f_s and i_s else None
        entry["rows_per_s"] = round(ingest["rows"] / i_s) if i_s and ingest.get("rows") else None
        entry["input_records_per_s"] = (round(ingest["records"] / i_s)
                                        if i_s and ingest.get("records") else None)
        results.append(entry)

    header = (f"{'format':8} {'rows':>10} {'input MB':>9} {'records':>10} {'floor s':>8} "
              f"{'ingest s':>9} {'ratio':>6} {'peak MB':>8} {'rows/s':>10}")
    print(header)
    print("-" * len(header))
    for e in results:
        ing = e["ingest"]
        print(f"{e['format']:8} {_fmt(e['rows']):>10} {e['input_bytes'] / 1e6:>9.1f} "
              f"{_fmt(e['input_records']):>10} {_fmt(e['floor'].get('seconds'), '.2f'):>8} "
              f"{_fmt(ing.get('seconds'), '.2f'):>9} {_fmt(e['ratio']):>6} "
              f"{_fmt(ing.get('peak_rss_mb')):>8} {_fmt(e['rows_per_s']):>10}")
        for kind in ("floor", "ingest", "ingest_python"):
            r = e.get(kind)
            if r and "seconds_min" in r:
                print(f"    {kind:14} wall min {r['seconds_min']:.2f} median "
                      f"{r['seconds_median']:.2f}  cpu min {r['cpu_seconds_min']:.2f} median "
                      f"{r['cpu_seconds_median']:.2f}")
        if e.get("python_ratio"):
            print(f"    without the scanner: ratio {e['python_ratio']}")
        for kind in ("floor", "ingest", "ingest_python", "cli"):
            if kind in e and "error" in e[kind]:
                print(f"    {kind} n/a: {e[kind]['error']}")
    report = {"benchmark": "ingest", "connections": args.rows, "seed": args.seed,
              "machine": machine(), "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
