"""The end-to-end pipeline: flows in, policies and a report out.

>>> from recommender import recommend                          # doctest: +SKIP
>>> rec = recommend("sample_flows/flows.parquet")              # doctest: +SKIP
>>> print(rec.to_yaml())                                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import pyarrow as pa

from .aggregate.edges import EdgeTables, aggregate_edges
from .config import RecommendConfig
from .errors import ConfigError, FlowFormatError
from .guardrails.model import Guardrails
from .guardrails.render import guardrails_format
from .ingest import iter_flow_batches
from .ingest._source import is_stream
from .ingest.checked import CheckedFlows
from .policy.kubernetes import render_kubernetes
from .policy.model import PolicySet
from .policy.writer import write_yaml_stream
from .report.model import build_report, finish_report, report_json, report_markdown
from .synthesis.decided import DecisionRun
from .synthesis.decisions import Decisions
from .synthesis.synthesizer import Findings, synthesize

_log = logging.getLogger("recommender")
T = TypeVar("T")

if TYPE_CHECKING:
    import networkx as nx

    from ._forked import Forked
    from .analysis.anomaly import Screening
    from .policy.dialects import DialectOptions
    from .policy.writer import TreeWriter

__all__ = ["Recommendation", "recommend", "recommend_edges", "resolve_guardrails"]

#: What the stages after the read import (about a second: SciPy, networkx, the report's parts).
_LATER_MODULES = (
    "scipy.sparse",
    "networkx",
    "recommender.analysis.anomaly",
    "recommender.analysis.clustering.core",
    "recommender.analysis.clustering.features",
    "recommender.synthesis.granularity",
    "recommender.analysis.segments",
    "recommender.analysis.graph",
    "recommender.report.graph_svg",
    "recommender.evaluation.replay",
    "recommender.report.html",
)


def _import_later_stages() -> None:
    """Import :data:`_LATER_MODULES` on a background thread, while the read of a parallel
    Hubble input keeps this process waiting on its workers (imports are thread-safe; a stage
    that needs a module first waits for it). Nothing changes but when the time is spent."""
    import importlib
    import threading

    from ._forked import join_before_fork

    def run() -> None:
        for name in _LATER_MODULES:
            with contextlib.suppress(Exception):  # the stage itself reports a real problem
                importlib.import_module(name)

    thread = threading.Thread(target=run, name="recommender-imports", daemon=True)
    thread.start()
    join_before_fork(thread)  # a child must not inherit an import half done


PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a run while it builds its results.

    The stages make millions of small objects that live until the end of the run (rows,
    rules, report entries); with Python's default thresholds (700, 10, 10) the collector
    walked them over and over: 40 % of the CPU time of a run over 8,000 workloads
    (``benchmarks/bench_wide.py``). With thresholds 100 times higher it still walked each of
    them once as it survived its first 100,000 allocations (0.44 CPU s of 5 at 8,000
    workloads, in 116 collections), so the collector is now off for the run: its objects
    hold no reference cycles to speak of (the peak memory of that run is the same with and
    without the collector; they are freed by reference counting), and any there are are
    collected when it ends. The collector's state and thresholds are put back afterwards.
    """
    old = gc.get_threshold()
    was_enabled = gc.isenabled()
    gc.set_threshold(max(old[0], 100_000), max(old[1], 50), max(old[2], 100))
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.set_threshold(*old)


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
        canonical rows, ``aggregate`` the rest of the streaming aggregation; for canonical
        Parquet files DuckDB scans itself, ``read`` is that scan (reading and a first grouping,
        in one pass) and ``aggregate`` the rest.
    guardrails
        The guardrails synthesis respected (None without ``guardrails=``); each written tree
        gets them in ``_guardrails/``.
    """

    policy_set: PolicySet
    report: dict[str, Any]
    tables: EdgeTables
    findings: Findings
    config: RecommendConfig
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    timings: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    guardrails: Guardrails | None = None

    @property
    def edges(self) -> pa.Table:
        """The evidence edges."""
        return self.tables.edges

    @property
    def evidence(self) -> EdgeTables:
        """The aggregation the policies were learned from: :attr:`tables` less the edges a
        guardrail denies (the same without guardrails)."""
        evidence = self._cache.get("evidence")
        return evidence if isinstance(evidence, EdgeTables) else self.tables

    def manifests(self, dialect: str | None = None) -> list[dict[str, Any]]:
        """The manifests of one dialect (``kubernetes``, ``calico``, ``cilium`` or ``istio``;
        default the first of ``config.dialects``), all rendered from :attr:`policy_set`.

        Calico, Cilium and Istio also use the evidence
        :func:`recommender.synthesis.enrich.enrich_policy_set`
        attaches (DNS names, entities, HTTP requests, service accounts) and the options in
        :attr:`config` (``staged``, ``tier``, ``domains``, ``l7``, ...).
        """
        from .policy.dialects import parse_dialects, render_dialect

        name = parse_dialects(dialect)[0] if dialect is not None else self.config.dialects[0]
        if name == "kubernetes":
            rendered = self._cache.get("kubernetes")  # rendered once by recommend()
            if rendered is not None:
                return list(rendered)
            return render_kubernetes(self.policy_set)
        cached = self._cache.get(f"dialect:{name}")  # istio: rendered once by recommend()
        if cached is not None:
            return list(cached)
        return render_dialect(self.dialect_policy_set(), name, dialect_options(self.config))

    def dialect_policy_set(self) -> PolicySet:
        """:attr:`policy_set` with the evidence richer dialects use (computed once)."""
        cached = self._cache.get("enriched")
        if cached is None:
            from .synthesis.enrich import enrich_policy_set

            cached = enrich_policy_set(self.policy_set, self.tables, self.findings.selectors)
            self._cache["enriched"] = cached
        return cached

    def guardrail_manifests(self, dialect: str | None = None) -> list[dict[str, Any]]:
        """The guardrails rendered for one dialect's tree ([] without guardrails).

        ``config.guardrails_format`` when set, else the dialect's own form (kubernetes:
        ClusterNetworkPolicy; calico: tiers; cilium: clusterwide deny policies).
        """
        if self.guardrails is None:
            return []
        from .guardrails.render import render_guardrails
        from .policy.dialects import parse_dialects

        name = parse_dialects(dialect)[0] if dialect is not None else self.config.dialects[0]
        return render_guardrails(self.guardrails, guardrails_format(self.config, name))

    def to_yaml(self, dialect: str | None = None) -> str:
        """Every manifest of one dialect (guardrails first) as one multi-document YAML string."""
        return write_yaml_stream(self.guardrail_manifests(dialect) + self.manifests(dialect))

    def edges_frame(self) -> Any:
        """The edges as a pandas DataFrame."""
        return self.tables.edges.to_pandas()

    def rules_frame(self) -> Any:
        """One row per emitted rule with its evidence, as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.report["rules"])

    @property
    def written(self) -> list[Path]:
        """The files :func:`recommend` wrote when given ``output`` (sorted; else ``[]``)."""
        return list(self._cache.get("written", ()))

    def write(self, out_dir: PathLike, dialects: Iterable[str] | str | None = None) -> list[Path]:
        """Write the policy tree (a folder per namespace, kustomizations) and the reports.

        ``dialects`` (default ``config.dialects``): with one, the tree is at the top of
        ``out_dir``; with several, each dialect's tree is in ``out_dir/<dialect>/``. The policy
        files are written on a background thread while the reports are rendered
        (:class:`~recommender.policy.writer.TreeWriter`); the folder is replaced as a whole
        once everything is written, or left as it was.
        """
        from .policy.writer import TreeWriter

        with _few_collections(), TreeWriter(Path(out_dir)) as tree:
            started = time.perf_counter()
            tree.start(self.trees(dialects))
            return self._finish_write(tree, started)

    def trees(
        self, dialects: Iterable[str] | str | None = None
    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Per dialect (default ``config.dialects``), the manifests by namespace folder that
        :meth:`write` writes, the guardrails in ``_guardrails/`` included."""
        from .policy.dialects import group_by_namespace, parse_dialects

        names = parse_dialects(dialects) if dialects is not None else self.config.dialects
        trees = {name: group_by_namespace(self.manifests(name)) for name in names}
        if self.guardrails is not None:
            from .policy.writer import GUARDRAILS_FOLDER

            for name, tree in trees.items():
                tree[GUARDRAILS_FOLDER] = self.guardrail_manifests(name)
        return trees

    def report_files(self) -> dict[str, bytes | str]:
        """The files :meth:`write` puts beside the policies: ``graph.svg``, ``report.html``,
        ``report.json`` and ``report.md``, by name."""
        from .analysis.graph import graph_from_edges
        from .report.html import report_html

        graph = self._cache.get("graph")  # built once by recommend() for the segments
        if graph is None:
            graph = graph_from_edges(
                self.tables.edges, self.tables.denied, self.tables.workload_labels
            )
        # On a wide cluster a child renders the picture, the JSON and the Markdown while the
        # HTML, the largest, is rendered here.
        others = _in_child_if_large(
            self.tables.edges.num_rows, _report_files_but_html, self.report, graph
        )
        html = report_html(self.report, self.edges, graph)
        files = others.result()
        return {
            "graph.svg": files["graph.svg"],
            "report.html": html,
            "report.json": files["report.json"],
            "report.md": files["report.md"],
        }

    def _finish_write(self, tree: TreeWriter, started: float) -> list[Path]:
        """Render the report files, add them to ``tree`` and swap it into place."""
        extra = self.report_files()
        rendered = time.perf_counter()
        self.timings["report_files"] = rendered - started
        written = tree.finish(extra)
        self.timings["write"] = time.perf_counter() - rendered
        return written


def _report_files_but_html(report: dict[str, Any], graph: nx.MultiDiGraph) -> dict[str, str]:
    """``graph.svg``, ``report.json`` and ``report.md`` of :meth:`Recommendation.report_files`."""
    from .report.graph_svg import render_svg

    in_scope = report.get("summary", {}).get("namespaces_in_scope") or []
    segments = (report.get("segments") or {}).get("segments") or []
    return {
        "graph.svg": render_svg(
            graph,
            max_nodes=GRAPH_SVG_MAX_NODES,
            in_scope=in_scope,
            segments={m: s["name"] for s in segments for m in s["members"]},
        ),
        "report.json": report_json(report),
        "report.md": report_markdown(report, graph_file="graph.svg"),
    }


def dialect_options(config: RecommendConfig) -> DialectOptions:
    """The dialect writers' options from a run's configuration."""
    from .policy.dialects import DialectOptions

    labels: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    if config.inventory is not None:
        from .synthesis.inventory import load_inventory

        labels = tuple((e.name, e.labels) for e in load_inventory(config.inventory))
    return DialectOptions(
        group_labels=labels,
        staged=config.staged,
        tier=config.tier,
        tier_order=config.tier_order,
        domains=config.domains,
        l7=config.l7,
        service_accounts=config.service_accounts,
        network_sets=config.network_sets,
        trust_domain=config.trust_domain,
        mtls=config.mtls,
    )


def _segments(tables: EdgeTables) -> tuple[dict[str, Any], nx.MultiDiGraph]:
    """Proposed segments (:func:`recommender.propose_segments`) for the report, and the
    communication graph they were found in, kept for ``graph.svg`` and ``report.html``
    (:meth:`Recommendation.write`), which draw the same."""
    from .analysis.graph import graph_from_edges
    from .analysis.segments import propose_segments

    graph = graph_from_edges(tables.edges, tables.denied, tables.workload_labels)
    return propose_segments(graph).to_dict(), graph


#: Reasons of excluded edges that are observed allowed traffic left out on purpose (the
#: self-check replays them as their own kind); the others are replies and ephemeral ports.
_ON_PURPOSE: Final = ("never-established", "below-min-connections", "denied-later")


def _on_purpose(tables: EdgeTables, evidence: EdgeTables) -> pa.Table:
    """The observed allowed edges left out on purpose, with a ``reason`` column: screening
    (``anomaly:<rule>``), never established, too few connections, and the edges a guardrail
    denies (``guardrail``, in ``tables.edges`` but not in ``evidence``)."""
    import pyarrow.compute as pc

    excluded = tables.excluded
    reasons = excluded.column("reason")
    mask = pc.or_(
        pc.is_in(reasons, pa.array(_ON_PURPOSE, pa.string())),
        pc.starts_with(reasons, "anomaly:"),
    )
    parts = [excluded.filter(pc.fill_null(mask, False))]
    if evidence.edges.num_rows != tables.edges.num_rows:
        from .aggregate.edges import EDGE_KEY

        kept = set(zip(*(evidence.edges.column(c).to_pylist() for c in EDGE_KEY), strict=True))
        rows = zip(*(tables.edges.column(c).to_pylist() for c in EDGE_KEY), strict=True)
        gone = pa.array([k not in kept for k in rows], pa.bool_())
        moved = tables.edges.filter(gone)
        moved = moved.append_column("reason", pa.array(["guardrail"] * moved.num_rows, pa.string()))
        parts.append(moved.select(excluded.column_names).cast(excluded.schema))
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def _self_check(
    policy_set: PolicySet,
    evidence: EdgeTables,
    guardrails: Guardrails | None = None,
    dialect: str = "kubernetes",
    tables: EdgeTables | None = None,
    intended: Iterable[tuple[Any, ...]] = (),
) -> dict[str, Any]:
    """Replay every observed allowed edge against the emitted policies with the project's own
    evaluator (Kubernetes semantics; with guardrails, the whole stack): the evidence, whose
    coverage must be 1.0 with no false denies, and the edges left out on purpose
    (:func:`_on_purpose`, from ``tables``: the screened aggregation before guardrails), counted
    as their own kind. ``problems`` lists what makes the self-check fail: false denies,
    flows denied in the input that the policies allow, and flows that never established that
    they allow (``docs/cli.md``: exit status 3). ``intended``: edge keys
    (:data:`~recommender.aggregate.edges.EDGE_KEY`) a reviewer's ``allow`` decision asks for:
    refused flows on them are allowed on purpose, counted as ``denied_but_decided``."""
    from dataclasses import replace as _replace

    from .evaluation.replay import replay

    coverage = replay(
        policy_set,
        evidence,
        synthetic_limit=_SELF_CHECK_TRIPLES,
        guardrails=guardrails,
        dialect=dialect,
        rule_findings=False,  # unused, redundant and broad rules are not part of the answer
    )
    data = coverage.to_dict()
    purposeful = _on_purpose(tables or evidence, evidence)
    by_reason: dict[str, dict[str, int]] = {}
    failed_allowed: list[dict[str, Any]] = []
    denied_keys: set[tuple[Any, ...]] = set()
    unjudged: set[tuple[Any, ...]] = set()
    if purposeful.num_rows:
        edges = purposeful.drop_columns(["reason"]).cast(evidence.edges.schema)
        empty = evidence.edges.schema.empty_table()
        replayed = replay(
            policy_set,
            _replace(evidence, edges=edges, denied=empty, excluded=purposeful.slice(0, 0)),
            synthetic_limit=0,
            guardrails=guardrails,
            dialect=dialect,
            rule_findings=False,
        )
        denied_keys = {
            (v.source, v.destination, v.protocol, v.port) for v in replayed.false_denies
        }
        unjudged = {
            (v.source, v.destination, v.protocol, v.port) for v in replayed.not_evaluated
        }
    for row in purposeful.select(
        ["src_kind", "src_namespace", "src_id", "dst_kind", "dst_namespace", "dst_id",
         "protocol", "dst_port", "connections", "reason"]
    ).to_pylist():  # fmt: skip
        source = _describe(row["src_kind"], row["src_namespace"], row["src_id"])
        destination = _describe(row["dst_kind"], row["dst_namespace"], row["dst_id"])
        key = (source, destination, row["protocol"], row["dst_port"])
        denied = key in denied_keys
        entry = by_reason.setdefault(
            row["reason"],
            {"edges": 0, "connections": 0, "denied_edges": 0, "denied_connections": 0},
        )
        entry["edges"] += 1
        entry["connections"] += int(row["connections"] or 0)
        entry["denied_edges"] += denied
        entry["denied_connections"] += int(row["connections"] or 0) if denied else 0
        if row["reason"] == "never-established" and not denied and key not in unjudged:
            failed_allowed.append(
                {"source": source, "destination": destination, "protocol": row["protocol"],
                 "port": row["dst_port"], "connections": int(row["connections"] or 0)}
            )  # fmt: skip
    # Only flows these policies govern count as refused flows they allow: an endpoint in a
    # namespace with policies (flows between namespaces left out are allowed by no one's say).
    scope = {p.namespace for p in policy_set.policies}

    def governed(source: str, destination: str) -> bool:
        return any(
            ":" not in e.split("/", 1)[0] and e.split("/", 1)[0] in scope
            for e in (source, destination)
            if "/" in e
        )

    refused_allowed = [v for v in coverage.denied_but_allowed if governed(v.source, v.destination)]
    # An edge both allowed (established) and denied in the input: the policy in force changed
    # during the window. Its allowed connections are evidence and its rule must allow it, so
    # it is no widening that admits refused traffic: listed for review, not a failure.
    decided_keys = {
        (_describe(k[0], k[1], k[2]), _describe(k[3], k[4], k[5]), k[6], k[7]) for k in intended
    }
    on_purpose = [
        v for v in refused_allowed
        if (v.source, v.destination, v.protocol, v.port) in decided_keys
    ]  # fmt: skip
    if on_purpose:
        refused_allowed = [
            v for v in refused_allowed
            if (v.source, v.destination, v.protocol, v.port) not in decided_keys
        ]  # fmt: skip
    mixed = _mixed_verdicts(refused_allowed, evidence) if refused_allowed else []
    if mixed:
        seen = {(v.source, v.destination, v.protocol, v.port) for v in mixed}
        refused_allowed = [
            v for v in refused_allowed if (v.source, v.destination, v.protocol, v.port) not in seen
        ]
    failed_allowed = [x for x in failed_allowed if governed(x["source"], x["destination"])]
    totals = {
        name: sum(v[name] for v in by_reason.values())
        for name in ("edges", "connections", "denied_edges", "denied_connections")
    }
    problems = []
    if coverage.false_denies:
        n = len(coverage.false_denies)
        problems.append(
            {
                "kind": "false-denies",
                "edges": n,
                "connections": coverage.false_deny_connections,
                "message": f"{n} observed allowed edge(s) ({coverage.false_deny_connections:,} "
                "connections) would be denied by these policies",
            }
        )
    if refused_allowed:
        n = len(refused_allowed)
        problems.append(
            {
                "kind": "denied-flows-allowed",
                "edges": n,
                "connections": sum(v.connections for v in refused_allowed),
                "message": f"{n} edge(s) denied in the input would be allowed by these policies",
            }
        )
    if failed_allowed:
        n = len(failed_allowed)
        problems.append(
            {
                "kind": "failed-flows-allowed",
                "edges": n,
                "connections": sum(x["connections"] for x in failed_allowed),
                "message": f"{n} edge(s) that never established would be allowed by these "
                "policies",
            }
        )
    return {
        "coverage": data["coverage"],
        "false_denies": len(coverage.false_denies),
        "denied_in_input_but_allowed": len(coverage.denied_but_allowed),
        "not_evaluated_edges": len(coverage.not_evaluated),
        "over_permissive": data["over_permissive"],
        "notes": data["notes"],
        "excluded_on_purpose": {**totals, "by_reason": dict(sorted(by_reason.items()))},
        "passed": not problems,
        "problems": problems,
        **({"denied_but_decided": len(on_purpose)} if on_purpose else {}),
        **(
            {
                "mixed_verdicts": {
                    "edges": len(mixed),
                    "denied_connections": sum(v.connections for v in mixed),
                    "examples": [
                        {"source": v.source, "destination": v.destination,
                         "protocol": v.protocol, "port": v.port,
                         "denied_connections": v.connections}
                        for v in mixed[:20]
                    ],
                }
            }
            if mixed
            else {}
        ),
    }


def _mixed_verdicts(refused_allowed: list[Any], evidence: EdgeTables) -> list[Any]:
    """The refused edges the policies allow that are also evidence (allowed and established
    in the input): the same source, destination, protocol and port."""
    rows = evidence.edges.select(
        ["src_kind", "src_namespace", "src_id", "dst_kind", "dst_namespace", "dst_id",
         "protocol", "dst_port"]
    ).to_pylist()  # fmt: skip
    learned = {
        (_describe(r["src_kind"], r["src_namespace"], r["src_id"]),
         _describe(r["dst_kind"], r["dst_namespace"], r["dst_id"]), r["protocol"], r["dst_port"])
        for r in rows
    }  # fmt: skip
    return [v for v in refused_allowed if (v.source, v.destination, v.protocol, v.port) in learned]


def _describe(kind: str, namespace: str | None, ident: str | None) -> str:
    """An endpoint as the replay names it (``namespace/workload``, ``kind:address``)."""
    return f"{namespace}/{ident}" if kind == "workload" else f"{kind}:{ident}"


#: Most nodes ``graph.svg`` beside the report draws (the busiest); `recommend graph` draws all.
GRAPH_SVG_MAX_NODES = 1000

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


def pq_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The record batches of a canonical Parquet file written by :func:`_spilled`."""
    import pyarrow.parquet as pq

    yield from pq.ParquetFile(path).iter_batches(batch_size=65536)


def _resolve_last(batches: Iterable[pa.RecordBatch], config: RecommendConfig) -> RecommendConfig:
    """``config`` with ``last`` turned into ``since``: that long before the latest flow start
    (before ``until``) of the input."""
    import pyarrow.compute as pc

    assert config.last is not None
    latest = None
    for batch in batches:
        starts = batch.column("start_time")
        if config.until is not None:
            starts = pc.filter(starts, pc.less(starts, pa.scalar(config.until, starts.type)))
        value = pc.max(starts).as_py()
        if value is not None and (latest is None or value > latest):
            latest = value
    if latest is None:
        return config.replace(last=None)
    if latest.tzinfo is None:
        latest = latest.replace(tzinfo=UTC)
    since = latest - config.last
    if config.since is not None and config.since > since:
        since = config.since
    return dataclasses.replace(config, since=since, last=None)


def _spilled(batches: Iterable[pa.RecordBatch], path: Path) -> Iterator[pa.RecordBatch]:
    """Pass ``batches`` through while writing them to a canonical Parquet file at ``path``."""
    import pyarrow.parquet as pq

    from .ingest.schema import FLOW_SCHEMA

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
    guardrails: Guardrails | PathLike | None = None,
    decisions: Decisions | PathLike | None = None,
    output: PathLike | None = None,
    **options: Any,
) -> Recommendation:
    """Recommend least-privilege Kubernetes NetworkPolicies from flows.

    Files are streamed: canonical rows are aggregated batch by batch as they are read, so
    memory holds the edges and one batch, never the whole flow table. Canonical Parquet files
    (as ``recommend ingest`` writes them) are scanned by DuckDB itself: only the columns the
    stages need, ``since``/``until`` pushed down, label maps read once per pod
    (:mod:`recommender.aggregate.parquet_scan`; the same result). ``on_batch`` is then called
    once per file.

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
        Held-out validation (:mod:`recommender.evaluation.validation`): learn on the earlier part of
        the window and replay the later part (``holdout=0.2``: the latest 20 % of the time span;
        ``split_at``: from that time on) against those policies. The result is
        ``report["holdout"]``; the policies returned are still learned from every flow. For files,
        the canonical rows are spilled to a temporary Parquet file for the second pass.
    engine, scheduler
        ``"embedded"`` (this process) or ``"dask"``: ingest and aggregation as Dask tasks, one
        per file, on the cluster at ``scheduler`` (an address such as ``tcp://host:8786``;
        None starts a local cluster). See :mod:`recommender.engine` and ``docs/scaling.md``.
    on_batch
        Called with the row count of every canonical batch read (progress displays).
    guardrails
        Organisation-wide rules (:class:`~recommender.guardrails.Guardrails` or a file,
        ``docs/guardrails.md``; default ``config.guardrails``). Observed flows an admin
        guardrail denies get no allow rule and are listed in ``report["guardrails"]`` as
        conflicts, with compliance checks; :meth:`Recommendation.write` adds the rendered
        guardrails in ``_guardrails/``.
    output
        Also write the result there, as :meth:`Recommendation.write` does (the folder is
        checked first, before anything is read). The policy files are written on a background
        thread while the self-check and the report are computed, and the folder is replaced
        only when everything is written: an error or Ctrl-C leaves it as it was.
        :attr:`Recommendation.written` lists the files.

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
        from .evaluation.validation import check_options

        check_options(holdout, split_at)  # fail before reading or aggregating anything
    from .engine import check_engine

    check_engine(engine, scheduler)
    guardrails = resolve_guardrails(config, guardrails)
    if decisions is None and config.decisions:
        decisions = config.decisions
    if decisions is not None and not isinstance(decisions, Decisions):
        from .synthesis.decisions import load_decisions

        path = os.fspath(decisions)
        decisions = load_decisions(path)
        config = config.replace(decisions=path)  # held-out validation applies them too
    decided = DecisionRun.start(decisions) if decisions is not None else None
    timings: dict[str, float] = {}
    parquet: list[Path] | None = None  # canonical Parquet files DuckDB reads itself
    with ExitStack() as stack:
        tree: TreeWriter | None = None
        if output is not None:  # a folder that may not be replaced: say so before reading
            from .policy.writer import TreeWriter

            tree = stack.enter_context(TreeWriter(Path(output)))
        stack.enter_context(_few_collections())
        started = time.perf_counter()
        holdout_input: pa.Table | Path
        reread: Path | None = None
        if isinstance(flows, pa.Table):
            if config.last is not None:
                config = _resolve_last(flows.to_batches(), config)
            raw = (flows.schema.metadata or {}).get(b"recommender.ledger")
            ledger = json.loads(raw) if raw else None
            timed = _Timed(flows.to_batches(), on_batch)
            tables = aggregate_edges(timed, config)
            holdout_input = flows
        elif engine == "dask":
            if config.last is not None:
                raise ConfigError("last (--last) needs the embedded engine; give since instead.")
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
            # The input checks (copies of one traffic in several formats, several clusters,
            # far-apart windows, --last): recommender.ingest.checked, shared by every command.
            # A pipe can be read once: rows read again later (held-out validation, the anomaly
            # screen, --last, copies) are kept in a spill file.
            checked = stack.enter_context(CheckedFlows(
                None, batches=batches, last=config.last, since=config.since,
                until=config.until,
                keep_rows=validate or any(is_stream(path) for path, _ in batches.files),
            ))
            keep_rows = checked.needs_spill
            if not keep_rows:
                from .aggregate.parquet_scan import scannable_parquet

                parquet = scannable_parquet(batches.files)
            holdout_input = Path()
            if parquet is not None:
                from .aggregate.parquet_scan import aggregate_parquet_files

                # Canonical Parquet: DuckDB reads only the columns it needs, the window pushed
                # down; the same edges and ledger as the stream (docs/scaling.md).
                counts: list[Any] = []
                try:
                    tables, scanned = aggregate_parquet_files(
                        parquet, config, batches.ledger, on_batch, counts
                    )
                except FlowFormatError:
                    parquet = None  # the stream reads the files, and says what is wrong
                else:
                    timed = _Timed((), None)
                    timed.seconds = scanned
                    # One file format: no copies to tell; several clusters, far-apart windows.
                    checked.add_counts(counts)
            if parquet is None:
                if batches.workers > 1 and any(fmt == "hubble" for _, fmt in batches.files):
                    _import_later_stages()  # while this process mostly waits for its workers
                timed = _Timed((), None)

                window: list[RecommendConfig] = [config]

                def aggregate(rows: Iterable[pa.RecordBatch]) -> EdgeTables:
                    nonlocal timed
                    if window[0].last is not None:  # the input's window is known now
                        window[0] = dataclasses.replace(
                            window[0], since=checked.since, last=None
                        )
                    timed = _Timed(rows, on_batch)
                    return aggregate_edges(timed, window[0])

                tables = checked.consume(aggregate)
                config = window[0]
                if keep_rows:
                    assert checked.spill is not None
                    reread = checked.spill
                    holdout_input = checked.kept_file() if validate else checked.spill
            # The JSON round trip gives the same values a read_flows table's metadata holds.
            ledger = json.loads(json.dumps(batches.ledger.to_dict()))
        aggregated = time.perf_counter()
        timings["read"] = timed.seconds
        timings["aggregate"] = aggregated - started - timed.seconds
        # Scans and lateral movement get no allow rule (unless trust_all_flows); the sibling
        # rule's per-pod figures come from the aggregation (tables.pod_peers), the rows below
        # are read again only without them: docs/clustering.md.
        rows: Any = (
            flows
            if isinstance(flows, pa.Table)
            else (lambda: checked.rows())
            if reread is not None
            else lambda: iter_flow_batches(flows, format, workers=workers)
        )
        if parquet is not None:
            from .aggregate.parquet_scan import parquet_rows
            from .analysis.anomaly import FLOW_COLUMNS

            scanned_files = parquet
            rows = lambda: parquet_rows(scanned_files, FLOW_COLUMNS)  # noqa: E731
        hold: Callable[[], dict[str, Any]] | None = None
        if validate:
            from .evaluation.validation import holdout_report

            def hold() -> dict[str, Any]:
                return holdout_report(
                    holdout_input, config, holdout=holdout, split_at=split_at
                )

        result = recommend_edges(
            tables,
            config,
            ledger=ledger,
            rows=rows,
            guardrails=guardrails,
            decided=decided,
            timings=timings,
            holdout=hold,
            tree=tree,
        )
        if tree is not None:
            result._cache["written"] = result._finish_write(tree, time.perf_counter())
        return result


def resolve_guardrails(
    config: RecommendConfig, guardrails: Guardrails | PathLike | None = None
) -> Guardrails | None:
    """The guardrails a run respects: ``guardrails`` (an object or a file), else
    ``config.guardrails``; loaded, and checked renderable in every configured dialect's format
    (a format that cannot express them is refused before anything is read)."""
    if guardrails is None and config.guardrails:
        guardrails = config.guardrails
    if guardrails is not None and not isinstance(guardrails, Guardrails):
        from .guardrails import load_guardrails

        guardrails = load_guardrails(os.fspath(guardrails))
    if guardrails is not None:
        from .guardrails.render import render_guardrails

        for name in config.dialects:  # refuse a format that cannot express them, before reading
            render_guardrails(guardrails, guardrails_format(config, name))
    return guardrails


#: Flow rows to read again: a canonical table, or a function returning its record batches.
FlowRows: TypeAlias = pa.Table | Callable[[], Iterable[pa.RecordBatch]]


def recommend_edges(
    tables: EdgeTables,
    config: RecommendConfig,
    *,
    ledger: dict[str, Any] | None = None,
    rows: FlowRows | None = None,
    screening: Screening | None = None,
    guardrails: Guardrails | None = None,
    decided: DecisionRun | None = None,
    timings: dict[str, float] | None = None,
    holdout: Callable[[], dict[str, Any]] | None = None,
    finish: bool = True,
    tree: TreeWriter | None = None,
) -> Recommendation:
    """Policies and the report from aggregated edges: the step of :func:`recommend` after the
    read, shared with the scheduled job (:mod:`recommender.job`).

    In order: the anomaly screen, the reviewer's decisions, the guardrails (conflicts, and the
    refused set no widening may admit), synthesis, host policies and inventory names, the
    Kubernetes rendering, the self-check, the report (anomalies, compaction, granularity,
    guardrails, mesh, segments, decisions), the held-out validation, the Istio section and the
    verdict.

    Parameters
    ----------
    tables
        The aggregation (:func:`~recommender.aggregate.edges.aggregate_edges`), not yet
        screened unless ``screening`` is given.
    config
        The run's options (guardrails and decisions come as objects, below).
    ledger
        The ingest ledger (``recommender.ledger`` metadata as JSON values), for the report.
    rows
        The canonical flow rows ``tables`` came from, or a function returning them again as
        record batches: the anomaly screen's sibling rule reads them (skipped without).
    screening
        An anomaly screen already done (``tables`` then being its result, possibly merged
        with remembered edges): not screened again.
    guardrails
        From :func:`resolve_guardrails`.
    decided
        The reviewer's decisions being applied (:class:`~recommender.synthesis.decided.
        DecisionRun`).
    timings
        Filled with the seconds of ``synthesize``, ``render``, ``self_check``, ``report`` (and
        ``holdout``).
    holdout
        Returns the report's ``holdout`` section (held-out validation), when asked.
    finish
        Call :func:`~recommender.report.model.finish_report` (the verdict); a caller adding
        sections of its own calls it afterwards.
    tree
        A :class:`~recommender.policy.writer.TreeWriter` to start writing the policy trees
        of ``config.dialects`` into as soon as they are rendered (in the background, while the
        self-check and the report run); the caller finishes it.
    """
    timings = {} if timings is None else timings
    aggregated = time.perf_counter()
    if screening is None:
        from .analysis.anomaly import screen_flows

        trusted = decided.trusted() if decided is not None else None
        screening = screen_flows(tables, rows, config, trusted=trusted)
        tables = screening.tables  # (its time counts in "synthesize")
    if decided is not None:  # rejected edges and excluded workloads: no allow rule
        tables = decided.apply_to_observed(tables)
    from .aggregate.latest import latest_verdicts

    tables = latest_verdicts(tables)  # denied after its last allowed connection: no rule
    # The segments need only these edges: on a wide cluster a child process finds them while
    # the policies are made here.
    segmenting = _in_child_if_large(tables.edges.num_rows, _segments, tables)
    evidence, conflicts, refused = tables, None, None
    if guardrails is not None:
        from .evaluation.guardrail_checks import find_conflicts, keep_edges

        conflicts, keep = find_conflicts(guardrails, tables, dialect=_precedence(config))
        evidence = keep_edges(tables, keep)  # never re-allow what a guardrail denies
        if not keep.all():  # nor let a widening admit it
            from .synthesis.refused import RefusedSet

            dropped = tables.edges.filter(pa.array(~keep))
            refused = RefusedSet.from_tables(tables) | RefusedSet.from_edges(
                dropped, "guardrail"
            )
    if decided is not None:
        learned = decided.evidence_with_allows(evidence, config.dns_both_protocols)
        policy_set, findings = synthesize(
            learned,
            config,
            refused,
            unmanaged=decided.unmanaged,
            allowed=decided.allowed_keys(),
            rejected=decided.rejected_keys(),
        )
    else:
        policy_set, findings = synthesize(evidence, config, refused)
    policy_set = _beyond_pods(policy_set, tables, findings, config)
    mark = _stage(timings, "synthesize", aggregated)
    cache: dict[str, Any] = {"evidence": evidence}
    if "kubernetes" in config.dialects:  # the other dialects render when written
        cache["kubernetes"] = render_kubernetes(policy_set)
    # The self-check reads what the report does not change: on a wide cluster it runs in a
    # child process, on the other core, while the report is built here.
    checking = _in_child_if_large(
        evidence.edges.num_rows, _checks, policy_set, evidence, guardrails,
        _precedence(config), tables, decided,
    )  # fmt: skip
    if tree is not None:  # written in the background from now on
        tree.start(
            Recommendation(
                policy_set, {}, tables, findings, config, cache, timings, guardrails
            ).trees(config.dialects)
        )
    mark = _stage(timings, "render", mark)
    timings["self_check"] = 0.0  # its place among the stages; its time once its answer is in
    report = build_report(policy_set, findings, tables, config, ledger)
    report["anomalies"] = screening.to_dict()
    from .report.sections import group_anomalies

    report["anomalies"]["groups"] = group_anomalies(a.to_dict() for a in screening.anomalies)
    report["summary"]["anomalies"] = len(screening.anomalies)
    from .synthesis.granularity import granularity_report

    report["compaction"] = findings.compaction
    report["granularity"] = granularity_report(findings, tables, config).to_dict()
    if guardrails is not None and conflicts is not None:
        from .report.guardrails import guardrails_report

        report["guardrails"] = guardrails_report(
            guardrails, conflicts, policy_set, findings, tables, config,
            _precedence(config),
        )
    if config.mtls == "strict":
        from .policy.istio import ROOT_NAMESPACE
        from .synthesis.mesh import mesh_report

        strict = [ns for ns in findings.namespaces_in_scope if ns != ROOT_NAMESPACE]
        report["mesh"] = mesh_report(tables, strict)
    report["segments"], cache["graph"] = segmenting.result()
    if decided is not None:
        report["decisions"] = decided.report()
    mark = _stage(timings, "report", mark)
    report["self_check"] = checking.result()
    timings["self_check"] = (
        checking.child_seconds if checking.child_seconds is not None
        else time.perf_counter() - mark
    )  # fmt: skip
    mark = time.perf_counter()
    if holdout is not None:
        report["holdout"] = holdout()
        _stage(timings, "holdout", mark)
    result = Recommendation(
        policy_set, report, tables, findings, config, cache, timings, guardrails
    )
    if "istio" in config.dialects:  # rendered now: its flagged rules belong in the report
        from .report.model import istio_section

        manifests = result.manifests("istio")
        cache["dialect:istio"] = manifests
        report["istio"] = istio_section(manifests, config.trust_domain)
        report["istio"]["self_check"] = _istio_self_check(manifests, policy_set, evidence, config)
    if finish:
        finish_report(report)  # the verdict weighs every part: the held-out and the Istio ones too
    return result


#: Edges from which the segments, the self-check and the report files are computed in child
#: processes (:func:`_in_child_if_large`): below, forking costs more than it saves.
FORK_MIN_EDGES: Final = 1000


def _in_child_if_large(edges: int, fn: Callable[..., T], *args: Any) -> Forked[T]:
    """``fn(*args)`` computed in a forked child (:mod:`recommender._forked`) when the run has
    at least :data:`FORK_MIN_EDGES` edges, else here when its result is asked for."""
    from ._forked import Forked, forked

    if edges >= FORK_MIN_EDGES:
        return forked(fn, *args)
    return Forked(fn, *args)


def _checks(
    policy_set: PolicySet,
    evidence: EdgeTables,
    guardrails: Guardrails | None,
    dialect: str,
    tables: EdgeTables,
    decided: DecisionRun | None,
) -> dict[str, Any]:
    """The report's ``self_check`` section: :func:`_self_check`, and with decisions how the
    policies treat each one (:func:`~recommender.evaluation.decision_check.judge_decided`)."""
    self_check = _self_check(
        policy_set, evidence, guardrails, dialect, tables,
        decided.allowed_keys() if decided is not None else (),
    )  # fmt: skip
    if decided is not None:
        from .evaluation.decision_check import judge_decided

        self_check["decisions"] = judge_decided(decided, policy_set, evidence, guardrails, dialect)
    return self_check


def _istio_self_check(
    manifests: list[dict[str, Any]],
    policy_set: PolicySet,
    tables: EdgeTables,
    config: RecommendConfig,
) -> dict[str, Any]:
    """Replay the evidence against the NetworkPolicies and the Istio objects together, with
    Istio's semantics for the latter: every observed call should still pass."""
    from .evaluation.replay import replay
    from .policy.authz import IstioPolicies
    from .policy.reader import parse_authorization_policy, parse_peer_authentication

    istio = IstioPolicies(
        tuple(parse_authorization_policy(m) for m in manifests
              if m["kind"] == "AuthorizationPolicy"),
        tuple(parse_peer_authentication(m) for m in manifests
              if m["kind"] == "PeerAuthentication"),
    )  # fmt: skip
    coverage = replay(
        policy_set, tables, synthetic_limit=0, istio=istio, trust_domain=config.trust_domain
    )
    return {
        "coverage": coverage.coverage,
        "false_denies": len(coverage.false_denies),
        "false_deny_examples": [e.to_dict() for e in coverage.false_denies[:20]],
        "denied_in_input_but_allowed": len(coverage.denied_but_allowed),
    }


def _precedence(config: RecommendConfig) -> str:
    """Whose precedence judges the flows: that of the first tree's guardrails format."""
    fmt = guardrails_format(config, config.dialects[0])
    return {"calico": "calico", "cilium": "cilium"}.get(fmt, "kubernetes")


def _stage(timings: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    timings[name] = now - since
    return now


def _beyond_pods(
    policy_set: PolicySet, tables: EdgeTables, findings: Findings, config: RecommendConfig
) -> PolicySet:
    """Host policies (``config.host_policies``) and inventory names (``config.inventory``)."""
    if config.inventory is not None:
        from .synthesis.inventory import apply_inventory, load_inventory

        policy_set = apply_inventory(policy_set, load_inventory(config.inventory))
    if config.host_policies:
        from .synthesis.hosts import host_policies

        hosts = host_policies(tables, findings, config)
        policy_set = PolicySet(policy_set.policies, policy_set.host_policies + hosts)
    return policy_set
