"""The end-to-end pipeline: flows in, policies and a report out.

>>> from recommender import recommend                          # doctest: +SKIP
>>> rec = recommend("sample_flows/flows.parquet")              # doctest: +SKIP
>>> print(rec.to_yaml())                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from .config import RecommendConfig
from .edges import EdgeTables, aggregate_edges
from .errors import ConfigError
from .ingest import read_flows
from .policy.kubernetes import render_kubernetes
from .policy.model import PolicySet
from .policy.writer import write_policy_tree, write_yaml_stream
from .report import build_report, report_json, report_markdown
from .synthesis import Findings, synthesize

__all__ = ["Recommendation", "recommend"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Recommendation:
    """The result of :func:`recommend`.

    Attributes
    ----------
    policy_set
        The dialect-neutral policies.
    report
        The report as a JSON-ready dict (``report.json``).
    edges
        The aggregated edges (Arrow); :meth:`edges_frame` gives a DataFrame.
    findings
        Synthesis notes (rules with evidence, node-local traffic, ...).
    config
        The options used.
    """

    policy_set: PolicySet
    report: dict[str, Any]
    tables: EdgeTables
    findings: Findings
    config: RecommendConfig

    @property
    def edges(self) -> pa.Table:
        """The evidence edges."""
        return self.tables.edges

    def manifests(self) -> list[dict[str, Any]]:
        """Kubernetes NetworkPolicy manifests, in policy order."""
        return render_kubernetes(self.policy_set)

    def to_yaml(self) -> str:
        """Every manifest as one multi-document YAML string."""
        return write_yaml_stream(self.manifests())

    def edges_frame(self) -> Any:
        """The edges as a pandas DataFrame."""
        return self.tables.edges.to_pandas()

    def rules_frame(self) -> Any:
        """One row per emitted rule with its evidence, as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.report["rules"])

    def write(self, out_dir: PathLike) -> list[Path]:
        """Write the policy tree (a folder per namespace, kustomizations) and the reports."""
        by_ns: dict[str, list[dict[str, Any]]] = {}
        for manifest in self.manifests():
            by_ns.setdefault(manifest["metadata"]["namespace"], []).append(manifest)
        from .graph import graph_from_edges
        from .graph_svg import render_svg
        from .report_html import report_html

        graph = graph_from_edges(
            self.tables.edges, self.tables.denied, self.tables.workload_labels
        )
        in_scope = self.report.get("summary", {}).get("namespaces_in_scope") or []
        segments = (self.report.get("segments") or {}).get("segments") or []
        extra = {
            "graph.svg": render_svg(
                graph,
                max_nodes=GRAPH_SVG_MAX_NODES,
                in_scope=in_scope,
                segments={m: s["name"] for s in segments for m in s["members"]},
            ),
            "report.html": report_html(self.report, self.edges),
            "report.json": report_json(self.report),
            "report.md": report_markdown(self.report, graph_file="graph.svg"),
        }
        return write_policy_tree(by_ns, Path(out_dir), extra_files=extra)


def _segments(tables: EdgeTables) -> dict[str, Any]:
    """Proposed segments (:func:`recommender.propose_segments`) for the report."""
    from .graph import graph_from_edges
    from .segments import propose_segments

    graph = graph_from_edges(tables.edges, tables.denied, tables.workload_labels)
    return propose_segments(graph).to_dict()


def _self_check(policy_set: PolicySet, tables: EdgeTables) -> dict[str, Any]:
    """Replay the evidence against the emitted policies with the project's own evaluator
    (Kubernetes semantics): coverage must be 1.0 with no false denies."""
    from .replay import replay

    coverage = replay(policy_set, tables, synthetic_limit=_SELF_CHECK_TRIPLES)
    data = coverage.to_dict()
    return {
        "coverage": data["coverage"],
        "false_denies": len(coverage.false_denies),
        "denied_in_input_but_allowed": len(coverage.denied_but_allowed),
        "not_evaluated_edges": len(coverage.not_evaluated),
        "over_permissive": data["over_permissive"],
        "notes": data["notes"],
    }


#: Most nodes ``graph.svg`` beside the report draws (the busiest); `recommend graph` draws all.
GRAPH_SVG_MAX_NODES = 1000

#: Most (source, destination, port) triples the report's self-check evaluates for
#: over-permissiveness; larger graphs use `recommend evaluate`.
_SELF_CHECK_TRIPLES = 20_000


def recommend(
    flows: pa.Table | PathLike | Iterable[PathLike],
    config: RecommendConfig | None = None,
    *,
    format: str | None = None,
    workers: int | None = None,
    holdout: float | None = None,
    split_at: datetime | str | None = None,
    **options: Any,
) -> Recommendation:
    """Recommend least-privilege Kubernetes NetworkPolicies from flows.

    Parameters
    ----------
    flows
        A canonical flow table (from :func:`recommender.read_flows`), or flow files, folders
        or glob patterns of any supported format.
    config
        Options; keyword ``options`` override single fields (for example
        ``namespaces=("shop",)``, ``since=datetime(...)``).
    format
        Input format when ``flows`` are paths (detected per file when None).
    workers
        Processes for reading Hubble files (None: 2 for large inputs on several cores).
    holdout, split_at
        Held-out validation (:mod:`recommender.validation`): learn on the earlier part of the
        window and replay the later part (``holdout=0.2``: the latest 20 % of the time span;
        ``split_at``: from that time on) against those policies. The result is
        ``report["holdout"]``; the policies returned are still learned from every flow.

    Returns
    -------
    Recommendation

    Raises
    ------
    RecommenderError
        On unreadable input or invalid options.
    """
    config = (
        (config or RecommendConfig()).replace(**options)
        if options
        else (config or RecommendConfig())
    )
    if holdout is not None or split_at is not None:
        from .validation import check_options

        check_options(holdout, split_at)  # fail before reading or aggregating anything
    if isinstance(flows, pa.Table):
        table = flows
        raw = (flows.schema.metadata or {}).get(b"recommender.ledger")
        ledger = json.loads(raw) if raw else None
    else:
        table = read_flows(flows, format, workers=workers)
        ledger = json.loads(table.schema.metadata[b"recommender.ledger"])
    if not isinstance(config, RecommendConfig):
        raise ConfigError("config must be a RecommendConfig.")
    tables = aggregate_edges(table, config)
    policy_set, findings = synthesize(tables, config)
    report = build_report(policy_set, findings, tables, config, ledger)
    report["self_check"] = _self_check(policy_set, tables)
    report["segments"] = _segments(tables)
    if holdout is not None or split_at is not None:
        from .validation import holdout_report

        report["holdout"] = holdout_report(table, config, holdout=holdout, split_at=split_at)
    return Recommendation(policy_set, report, tables, findings, config)
