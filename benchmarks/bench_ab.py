"""A/B: the same Hubble input through two checkouts, interleaved, CPU and wall seconds.

    python benchmarks/bench_ab.py --base /path/to/main --head . [--connections 100000]
                                  [--repeat 3]

For each of ``--repeat`` rounds and each checkout (``PYTHONPATH`` set to it, its compiled
scanner built), in its own subprocess: the reader (the rows of ``iter_flow_batches(FILE,
workers=1)``) and ``python -m recommender FILE -o DIR`` end to end. The input is
``bench_end_to_end.ensure_input`` (generated once). Prints min and median wall and CPU seconds
(``os.wait4``: worker processes included) per checkout and the change. Used for the outcome
and screening costs in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

READ = (
    "import sys, recommender as r; "
    "print(sum(b.num_rows for b in r.iter_flow_batches(sys.argv[1], workers=1)))"
)


def _run(argv: list[str], tree: str) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=tree)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=tempfile.gettempdir())  # fmt: skip
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--head", required=True)
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from bench_end_to_end import ensure_input

    path = str(ensure_input(args.connections, 0))
    out = tempfile.mkdtemp()
    trees = {"base": str(Path(args.base).resolve()), "head": str(Path(args.head).resolve())}
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        for name, tree in trees.items():
            for what, argv in (
                ("reader", [sys.executable, "-c", READ, path]),
                ("end-to-end", [sys.executable, "-m", "recommender", path, "-o",
                                f"{out}/{name}"]),
            ):
                results.setdefault((what, name), []).append(_run(argv, tree))
    for what in ("reader", "end-to-end"):
        line = [what]
        stats = {}
        for name in trees:
            walls = [w for w, _ in results[(what, name)]]
            cpus = [c for _, c in results[(what, name)]]
            stats[name] = (min(cpus), median(cpus))
            line.append(f"{name}: wall {min(walls):.2f}/{median(walls):.2f} "
                        f"cpu {min(cpus):.2f}/{median(cpus):.2f}")  # fmt: skip
        change = [stats["head"][k] / stats["base"][k] - 1 for k in (0, 1)]
        line.append(f"cpu change {change[0]:+.1%}/{change[1]:+.1%} (min/median)")
        print("; ".join(line))


if __name__ == "__main__":
    main()
