"""CPU seconds of the report's pieces on one ``recommend()`` result, for comparing two code
versions on a shared machine (the pieces run in child processes in a real run; here each is
called in this process, so its whole cost is counted).

    PYTHONPATH=. python benchmarks/report_cpu.py FLOWS

Prints, each the lower of three calls timed with ``time.process_time`` under the collector
thresholds of a run: the communication graph (``graph_from_edges``), the segments
(``propose_segments(...).to_dict()``), the report model (``build_report``), the granularity
report, ``report.json``, ``report.html``, ``graph.svg`` and ``report.md``.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any


def _cpu(call: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
    return best


def main(path: str) -> str:
    from recommender import pipeline
    from recommender.analysis.graph import graph_from_edges
    from recommender.analysis.segments import propose_segments
    from recommender.report.graph_svg import render_svg
    from recommender.report.html import report_html
    from recommender.report.model import build_report, report_json, report_markdown
    from recommender.synthesis.granularity import granularity_report

    gc.set_threshold(100_000, 50, 100)  # as the command line runs
    rec = pipeline.recommend(path)
    t, report = rec.tables, rec.report
    graph = graph_from_edges(t.edges, t.denied, t.workload_labels)
    segments = {m: s["name"] for s in report["segments"]["segments"] for m in s["members"]}
    scope = report["summary"]["namespaces_in_scope"]
    pieces: dict[str, Callable[[], Any]] = {
        "graph": lambda: graph_from_edges(t.edges, t.denied, t.workload_labels),
        "segments": lambda: propose_segments(graph).to_dict(),
        "build_report": lambda: build_report(
            rec.policy_set, rec.findings, t, rec.config, report.get("ingest")
        ),
        "granularity": lambda: granularity_report(rec.findings, t, rec.config),
        "json": lambda: report_json(report),
        "html": lambda: report_html(report, rec.edges, graph),
        "svg": lambda: render_svg(
            graph, max_nodes=pipeline.GRAPH_SVG_MAX_NODES, in_scope=scope, segments=segments
        ),
        "md": lambda: report_markdown(report, graph_file="graph.svg"),
    }
    seconds = {name: _cpu(call) for name, call in pieces.items()}
    return " ".join(f"{k}={v:.3f}" for k, v in seconds.items()) + (
        f" total={sum(seconds.values()):.3f}"
    )


if __name__ == "__main__":
    print(main(sys.argv[1]))
