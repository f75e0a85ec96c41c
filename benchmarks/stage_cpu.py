"""CPU seconds per pipeline stage of one ``recommend()`` call, for comparing two code versions on
a shared machine (wall times swing with the load; CPU times much less).

    PYTHONPATH=. python benchmarks/stage_cpu.py FLOWS

Prints the stages of :attr:`recommender.Recommendation.timings` measured with
``time.process_time`` (this process: DuckDB's threads included, the Hubble reader processes
not), the total, the reader processes' CPU (``children``), the wall time and the peak RSS. No
files are written (the report files and the policy tree are left out).
"""

from __future__ import annotations

import resource
import sys
import time
import types


def main(path: str) -> str:
    from recommender import pipeline

    # The stage clock of recommend() becomes this process's CPU clock.
    setattr(pipeline, "time", types.SimpleNamespace(perf_counter=time.process_time))  # noqa: B010
    started, wall = time.process_time(), time.perf_counter()
    rec = pipeline.recommend(path)
    total = time.process_time() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    stages = " ".join(f"{k}={v:.2f}" for k, v in rec.timings.items())
    return (
        f"{stages} total={total:.2f} children={children.ru_utime + children.ru_stime:.2f} "
        f"wall={time.perf_counter() - wall:.2f} maxrss={peak}MB"
    )


if __name__ == "__main__":
    print(main(sys.argv[1]))
