"""End to end on Hubble JSON: ``recommend`` against the msgspec floor and hubble-audit2policy.

    python benchmarks/bench_end_to_end.py --connections 100000 [--seed 0] [--repeat 3]
                                          [--out benchmarks/results/e2e-100k.json]

Input: the project's generator (:mod:`recommender.samples.generator`) writes the Hubble events of N
connections (about 4 events each: SYN at both ends, the reply, an ACK, plus L7 and policy-verdict
events) as a plain JSON-lines file in ``benchmarks/data/`` (cached by N and seed).

Each measurement runs in its own subprocess, so import time is included for every tool and the
peak RSS (``os.wait4``) is its own:

- **floor**: read the file in 4 MiB chunks, split lines and ``msgspec.json.decode`` every line
  once, on one core (``bench_ingest.decode_every_line``, the floor of every benchmark here);
- **recommend**: ``python -m recommender FILE -o DIR`` (ingest, aggregation, synthesis, YAML and
  reports written);
- **recommend-python**: the same with ``RECOMMENDER_NO_SCANNER=1`` (the Hubble reader without its
  compiled scanner), unless ``--no-python``;
- **hubble-audit2policy** (the peer, ``pip install hubble-audit2policy``; a benchmark-only
  dependency): ``hubble-audit2policy FILE -o DIR --no-enrich`` on the same file, all verdicts.

Tools run in turn, ``--repeat`` times (default 2), interleaved; the fastest run of each counts,
and the JSON also keeps the minimum and median wall and CPU (user + sys, worker processes
included) seconds. The input is read once first, so that no tool pays for the disk, and the
package's byte code is written (see ``compile_sources``). Prints a
table and writes JSON with the wall and CPU seconds, ratios and peak RSS.
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
DATA = HERE / "data"
DATA_VERSION = 1


def ensure_input(connections: int, seed: int) -> Path:
    """The plain JSON-lines Hubble file of ``connections`` connections (generated once)."""
    path = DATA / f"hubble-e2e-{connections}-s{seed}-v{DATA_VERSION}.jsonl"
    if path.is_file():
        return path
    from recommender.samples.generator import generate_connections, write_hubble_jsonl

    DATA.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    write_hubble_jsonl(generate_connections(connections=connections, seed=seed), tmp, seed=seed)
    tmp.replace(path)
    return path


FLOOR = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
from bench_ingest import decode_every_line
print(decode_every_line(sys.argv[1]))
"""


def compile_sources() -> None:
    """Write the byte code of the ``recommender`` package, as ``pip install`` does for the peer
    (and for a non-editable install of this project). From an editable checkout, under
    ``PYTHONDONTWRITEBYTECODE`` (set on some machines), every run would otherwise compile
    its modules again (about 0.3 s), a cost no installed tool pays."""
    import compileall

    import recommender

    compileall.compile_dir(Path(recommender.__file__).parent, quiet=1)


def run(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``argv``; wall and CPU seconds and peak RSS of the child."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    return {
        "seconds": round(wall, 3),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "exit": code,
        "tail": (out + err).strip().splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs per tool; the fastest counts (the machine may be shared)")
    parser.add_argument("--no-python", action="store_true",
                        help="skip recommend without the compiled scanner")
    args = parser.parse_args(argv)

    path = ensure_input(args.connections, args.seed)
    compile_sources()
    with path.open("rb") as fh:  # also warms the page cache, so no tool pays for the disk
        lines = sum(1 for _ in fh)
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    results: dict[str, Any] = {}
    commands: dict[str, list[str] | None] = {
        "floor": [sys.executable, "-c", FLOOR, str(path)],
        "recommend": [sys.executable, "-m", "recommender", str(path), "-o", str(work / "ours")],
        "recommend-python": [sys.executable, "-m", "recommender", str(path), "-o",
                             str(work / "ours")],
        "hubble-audit2policy": None,
    }
    if args.no_python:
        del commands["recommend-python"]
    python_env = dict(os.environ, RECOMMENDER_NO_SCANNER="1")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    peer = shutil.which("hubble-audit2policy")
    if peer:
        commands["hubble-audit2policy"] = [peer, str(path), "-o", str(work / "peer"),
                                           "--no-enrich"]
    try:
        for _ in range(max(args.repeat, 1)):  # interleaved, so load changes hit every tool
            for name, command in commands.items():
                if command is None:
                    results[name] = None
                    continue
                shutil.rmtree(work / "ours", ignore_errors=True)
                result = run(command, python_env if name == "recommend-python" else None)
                runs[name].append(result)
                best = results.get(name)
                if best is None or result["seconds"] < best["seconds"]:
                    results[name] = result
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for name, result in results.items():
        if result is not None:
            walls = sorted(r["seconds"] for r in runs[name])
            cpus = sorted(r["cpu_seconds"] for r in runs[name])
            result.update(runs=len(walls), seconds_min=walls[0], seconds_median=median(walls),
                          cpu_seconds_min=cpus[0], cpu_seconds_median=median(cpus))
    floor = results["floor"]["seconds"]
    ours = results["recommend"]["seconds"]
    summary = {
        "benchmark": "end-to-end",
        "connections": args.connections,
        "seed": args.seed,
        "input": str(path.relative_to(HERE.parent)),
        "input_bytes": path.stat().st_size,
        "input_lines": lines,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "results": results,
        "recommend_vs_floor": round(ours / floor, 2),
        "recommend_cpu_vs_floor_cpu": round(results["recommend"]["cpu_seconds"]
                                            / results["floor"]["cpu_seconds"], 2),
    }
    summary["recommend_median_vs_floor_median"] = round(
        results["recommend"]["seconds_median"] / results["floor"]["seconds_median"], 2)
    if results.get("recommend-python"):
        summary["recommend_python_vs_floor"] = round(
            results["recommend-python"]["seconds"] / floor, 2)
    if results["hubble-audit2policy"]:
        peer = results["hubble-audit2policy"]
        summary["peer_vs_recommend"] = round(peer["seconds"] / ours, 2)
        summary["peer_vs_recommend_median"] = round(
            peer["seconds_median"] / results["recommend"]["seconds_median"], 2)
        summary["peer_cpu_vs_recommend_cpu"] = round(
            peer["cpu_seconds_min"] / results["recommend"]["cpu_seconds_min"], 2)
    print(f"input: {path.name}, {lines:,} lines, {path.stat().st_size / 1e6:,.0f} MB")
    print(f"{'tool':<22}{'wall min':>10}{'median':>10}{'cpu min':>10}{'median':>10}"
          f"{'peak MB':>10}  exit")
    for name, r in results.items():
        if r is None:
            print(f"{name:<22}{'n/a (not installed)':>30}")
            continue
        print(f"{name:<22}{r['seconds_min']:>10.2f}{r['seconds_median']:>10.2f}"
              f"{r['cpu_seconds_min']:>10.2f}{r['cpu_seconds_median']:>10.2f}"
              f"{r['peak_rss_mb']:>10.0f}  {r['exit']}")
    print(f"recommend / floor: {summary['recommend_vs_floor']}x wall, "
          f"{summary['recommend_cpu_vs_floor_cpu']}x cpu")
    if "peer_vs_recommend" in summary:
        print(f"hubble-audit2policy / recommend: {summary['peer_vs_recommend']}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
