"""The end-to-end pipeline: flows in, policies and a report out.

>>> from recommender import recommend                          # doctest: +SKIP
>>> rec = recommend("sample_flows/flows.parquet")              # doctest: +SKIP
>>> print(rec.to_yaml())                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from .config import RecommendConfig
from .edges import EdgeTables, aggregate_edges
from .errors import ConfigError
from .ingest import iter_flow_batches
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
    timings
        Seconds per pipeline stage, in the order run (``read``, ``aggregate``,
        ``synthesize``, ``render``, ``self_check``, ``report``, ``holdout`` when asked;
        :meth:`write` adds ``report_files`` and ``write``). Wall-clock time, so kept out of
        the report, whose bytes depend on the input only. ``read`` is the time spent producing
        canonical rows, ``aggregate`` the rest of the streaming aggregation.
    """

    policy_set: PolicySet
    report: dict[str, Any]
    tables: EdgeTables
    findings: Findings
    config: RecommendConfig
    timings: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    _manifests: list[dict[str, Any]] | None = field(default=None, compare=False, repr=False)

    @property
    def edges(self) -> pa.Table:
        """The evidence edges."""
        return self.tables.edges

    def manifests(self) -> list[dict[str, Any]]:
        """Kubernetes NetworkPolicy manifests, in policy order (rendered once, by
        :func:`recommend`; treat them as read-only)."""
        if self._manifests is not None:
            return list(self._manifests)
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
        started = time.perf_counter()
        by_ns: dict[str, list[dict[str, Any]]] = {}
        for manifest in self.manifests():
            by_ns.setdefault(manifest["metadata"]["namespace"], []).append(manifest)
        from .report_html import report_html

        extra = {
            "report.html": report_html(self.report, self.edges),
            "report.json": report_json(self.report),
            "report.md": report_markdown(self.report),
        }
        rendered = time.perf_counter()
        self.timings["report_files"] = rendered - started
        written = write_policy_tree(by_ns, Path(out_dir), extra_files=extra)
        self.timings["write"] = time.perf_counter() - rendered
        return written


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


#: Most (source, destination, port) triples the report's self-check evaluates for
#: over-permissiveness; larger graphs use `recommend evaluate`.
_SELF_CHECK_TRIPLES = 20_000


class _Timed:
    """Batches passed through, with the time spent producing them and a per-batch callback."""

    def __init__(
        self, batches: Iterable[pa.RecordBatch], on_batch: Callable[[int], None] | None
    ) -> None:
        self._batches = iter(batches)
        self._on_batch = on_batch
        self.seconds = 0.0
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            started = time.perf_counter()
            try:
                batch = next(self._batches)
            except StopIteration:
                self.seconds += time.perf_counter() - started
                return
            self.seconds += time.perf_counter() - started
            self.rows += batch.num_rows
            if self._on_batch is not None:
                self._on_batch(batch.num_rows)
            yield batch


def _spilled(batches: Iterable[pa.RecordBatch], path: Path) -> Iterator[pa.RecordBatch]:
    """Pass ``batches`` through while writing them to a canonical Parquet file at ``path``."""
    import pyarrow.parquet as pq

    from .schema import FLOW_SCHEMA

    with pq.ParquetWriter(path, FLOW_SCHEMA, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)
            yield batch


def recommend(
    flows: pa.Table | PathLike | Iterable[PathLike],
    config: RecommendConfig | None = None,
    *,
    format: str | None = None,
    workers: int | None = None,
    holdout: float | None = None,
    split_at: datetime | str | None = None,
    engine: str = "embedded",
    scheduler: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    **options: Any,
) -> Recommendation:
    """Recommend least-privilege Kubernetes NetworkPolicies from flows.

    Files are streamed: canonical rows are aggregated batch by batch as they are read, so
    memory holds the edges and one batch, never the whole flow table.

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
        ``report["holdout"]``; the policies returned are still learned from every flow. For
        files, the canonical rows are spilled to a temporary Parquet file for the second pass.
    engine, scheduler
        ``"embedded"`` (this process) or ``"dask"``: ingest and aggregation as Dask tasks, one
        per file, on the cluster at ``scheduler`` (an address such as ``tcp://host:8786``;
        None starts a local cluster). See :mod:`recommender.engine` and ``docs/scaling.md``.
    on_batch
        Called with the row count of every canonical batch read (progress displays).

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
    if not isinstance(config, RecommendConfig):
        raise ConfigError("config must be a RecommendConfig.")
    validate = holdout is not None or split_at is not None
    if validate:
        from .validation import check_options

        check_options(holdout, split_at)  # fail before reading or aggregating anything
    from .engine import check_engine

    check_engine(engine, scheduler)
    timings: dict[str, float] = {}
    with ExitStack() as stack:
        started = time.perf_counter()
        holdout_input: pa.Table | Path
        if isinstance(flows, pa.Table):
            raw = (flows.schema.metadata or {}).get(b"recommender.ledger")
            ledger = json.loads(raw) if raw else None
            timed = _Timed(flows.to_batches(), on_batch)
            tables = aggregate_edges(timed, config)
            holdout_input = flows
        elif engine == "dask":
            from .engine.dask_engine import dask_edges

            tables, ledger_obj, read_s = dask_edges(
                flows, config, format=format, scheduler=scheduler, on_batch=on_batch
            )
            ledger = json.loads(json.dumps(ledger_obj.to_dict()))
            timed = _Timed((), None)
            timed.seconds = read_s
            holdout_input = Path()
            if validate:  # the second pass reads the files again, here
                spill = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "flows.parquet"
                for _ in _spilled(iter_flow_batches(flows, format, workers=workers), spill):
                    pass
                holdout_input = spill
        else:
            batches = iter_flow_batches(flows, format, workers=workers)
            source: Iterable[pa.RecordBatch] = batches
            holdout_input = Path()
            if validate:
                spill = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "flows.parquet"
                source = _spilled(batches, spill)
                holdout_input = spill
            timed = _Timed(source, on_batch)
            tables = aggregate_edges(timed, config)
            # The JSON round trip gives the same values a read_flows table's metadata holds.
            ledger = json.loads(json.dumps(batches.ledger.to_dict()))
        aggregated = time.perf_counter()
        timings["read"] = timed.seconds
        timings["aggregate"] = aggregated - started - timed.seconds
        policy_set, findings = synthesize(tables, config)
        mark = _stage(timings, "synthesize", aggregated)
        manifests = render_kubernetes(policy_set)
        mark = _stage(timings, "render", mark)
        self_check = _self_check(policy_set, tables)
        mark = _stage(timings, "self_check", mark)
        report = build_report(policy_set, findings, tables, config, ledger)
        report["self_check"] = self_check
        mark = _stage(timings, "report", mark)
        if validate:
            from .validation import holdout_report

            report["holdout"] = holdout_report(
                holdout_input, config, holdout=holdout, split_at=split_at
            )
            _stage(timings, "holdout", mark)
    return Recommendation(policy_set, report, tables, findings, config, timings, manifests)


def _stage(timings: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    timings[name] = now - since
    return now
