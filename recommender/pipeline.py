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
from .guardrails.model import Guardrails
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
    guardrails
        The guardrails synthesis respected (None without ``--guardrails``).
    """

    policy_set: PolicySet
    report: dict[str, Any]
    tables: EdgeTables
    findings: Findings
    config: RecommendConfig
    guardrails: Guardrails | None = None

    @property
    def edges(self) -> pa.Table:
        """The evidence edges."""
        return self.tables.edges

    def manifests(self) -> list[dict[str, Any]]:
        """Kubernetes NetworkPolicy manifests, in policy order."""
        return render_kubernetes(self.policy_set)

    def guardrail_manifests(self) -> list[dict[str, Any]]:
        """The guardrails rendered as ``config.guardrails_format`` ([] without guardrails)."""
        if self.guardrails is None:
            return []
        from .guardrails.render import render_guardrails

        return render_guardrails(self.guardrails, self.config.guardrails_format)

    def to_yaml(self) -> str:
        """Every manifest (guardrails first) as one multi-document YAML string."""
        return write_yaml_stream(self.guardrail_manifests() + self.manifests())

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
        from .report_html import report_html

        extra = {
            "report.html": report_html(self.report, self.edges),
            "report.json": report_json(self.report),
            "report.md": report_markdown(self.report),
        }
        guardrails = self.guardrail_manifests()
        return write_policy_tree(
            by_ns,
            Path(out_dir),
            extra_files=extra,
            cluster_folders={GUARDRAILS_FOLDER: guardrails} if guardrails else None,
        )


def _self_check(
    policy_set: PolicySet,
    tables: EdgeTables,
    guardrails: Guardrails | None = None,
    dialect: str = "kubernetes",
) -> dict[str, Any]:
    """Replay the evidence against the emitted policies with the project's own evaluator
    (Kubernetes semantics; with guardrails, the whole stack): coverage must be 1.0 with no
    false denies."""
    from .replay import replay

    coverage = replay(
        policy_set,
        tables,
        synthetic_limit=_SELF_CHECK_TRIPLES,
        guardrails=guardrails,
        dialect=dialect,
    )
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


def recommend(
    flows: pa.Table | PathLike | Iterable[PathLike],
    config: RecommendConfig | None = None,
    *,
    format: str | None = None,
    workers: int | None = None,
    holdout: float | None = None,
    split_at: datetime | str | None = None,
    guardrails: Guardrails | PathLike | None = None,
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
    guardrails
        Organisation-wide rules (:class:`~recommender.guardrails.Guardrails` or a file,
        ``docs/guardrails.md``; default ``config.guardrails``). Observed flows an admin
        guardrail denies get no allow rule and are listed in ``report["guardrails"]`` as
        conflicts, with compliance checks; :meth:`Recommendation.write` adds the rendered
        guardrails in ``guardrails/``.

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
    if guardrails is None and getattr(config, "guardrails", None):
        guardrails = config.guardrails
    if guardrails is not None and not isinstance(guardrails, Guardrails):
        from .guardrails import load_guardrails

        guardrails = load_guardrails(os.fspath(guardrails))
    if guardrails is not None:
        from .guardrails.render import render_guardrails

        render_guardrails(guardrails, _format(config))  # refuse before the heavy work
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
    evidence, conflicts = tables, None
    if guardrails is not None:
        from .guardrails.checks import find_conflicts, keep_edges

        conflicts, keep = find_conflicts(guardrails, tables, dialect=_dialect(config))
        evidence = keep_edges(tables, keep)  # never re-allow what a guardrail denies
    policy_set, findings = synthesize(evidence, config)
    report = build_report(policy_set, findings, tables, config, ledger)
    report["self_check"] = _self_check(policy_set, evidence, guardrails, _dialect(config))
    if guardrails is not None and conflicts is not None:
        from .guardrails.report import guardrails_report

        report["guardrails"] = guardrails_report(
            guardrails, conflicts, policy_set, findings, tables, config
        )
    if holdout is not None or split_at is not None:
        from .validation import holdout_report

        report["holdout"] = holdout_report(table, config, holdout=holdout, split_at=split_at)
    return Recommendation(policy_set, report, tables, findings, config, guardrails)


#: The output folder of rendered guardrails.
GUARDRAILS_FOLDER = "guardrails"


def _format(config: object) -> str:
    return str(getattr(config, "guardrails_format", "cluster-network-policy"))


def _dialect(config: RecommendConfig) -> str:
    """The precedence rules that match the guardrails' rendering."""
    return {"calico": "calico", "cilium": "cilium"}.get(config.guardrails_format, "kubernetes")
