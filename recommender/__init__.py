"""recommender: least-privilege Kubernetes network policies from flow logs.

The public API is re-exported here; see ``docs/`` for the guide.
"""

from __future__ import annotations

__version__ = "0.1.0"

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import _compat
from .errors import (
    ConfigError,
    FlowFormatError,
    FlowSourceError,
    GitOpsError,
    InputError,
    NoFlowsError,
    RecommenderError,
    SchemaError,
    StorageError,
    SynthesisError,
    UnsupportedDialectError,
)

# The rest is imported on first use, so that `recommend --help` does not wait for pyarrow and
# DuckDB to load (PEP 562).
_LAZY = {
    "Anomaly": "analysis.anomaly",
    "Screening": "analysis.anomaly",
    "screen_flows": "analysis.anomaly",
    "BehaviourClustering": "analysis.clustering.estimators",
    "SignatureGrouping": "analysis.clustering.estimators",
    "CommunicationFeatures": "analysis.clustering.features",
    "communication_features": "analysis.clustering.features",
    "GranularityReport": "synthesis.granularity",
    "granularity_report": "synthesis.granularity",
    "address_class_table": "aggregate.addresses",
    "classify_address": "aggregate.addresses",
    "RecommendConfig": "config",
    "load_config": "config",
    "EdgeTables": "aggregate.edges",
    "PartialEdges": "aggregate.edges",
    "aggregate_edges": "aggregate.edges",
    "finish_edges": "aggregate.edges",
    "merge_partials": "aggregate.edges",
    "partial_edges": "aggregate.edges",
    "FORMATS": "ingest",
    "FlowBatches": "ingest",
    "detect_format": "ingest",
    "iter_flow_batches": "ingest",
    "read_flows": "ingest",
    "IngestLedger": "ingest.ledger",
    "Evidence": "policy",
    "LabelSelector": "policy",
    "Peer": "policy",
    "Policy": "policy",
    "PolicySet": "policy",
    "PortSpec": "policy",
    "Rule": "policy",
    "FlowProfile": "ingest.profile",
    "profile_flows": "ingest.profile",
    "Recommendation": "pipeline",
    "recommend": "pipeline",
    "recommend_edges": "pipeline",
    "resolve_guardrails": "pipeline",
    "FLOW_SCHEMA": "ingest.schema",
    "SCHEMA_VERSION": "ingest.schema",
    "synthesize": "synthesis.synthesizer",
    "Decision": "synthesis.decisions",
    "Decisions": "synthesis.decisions",
    "load_decisions": "synthesis.decisions",
    "dump_decisions": "synthesis.decisions",
    "write_decisions_atomic": "synthesis.decisions",
    "Cluster": "evaluation.evaluator",
    "Verdict": "evaluation.evaluator",
    "evaluate": "evaluation.evaluator",
    "read_cluster": "evaluation.evaluator",
    "read_policies": "policy.reader",
    "DialectOptions": "policy.dialects",
    "render_dialect": "policy.dialects",
    "build_graph": "analysis.graph",
    "write_graph": "report.graph_io",
    "SegmentProposal": "analysis.segments",
    "propose_segments": "analysis.segments",
    "Coverage": "evaluation.replay",
    "cluster_from_flows": "evaluation.replay",
    "replay": "evaluation.replay",
    "Guardrails": "guardrails",
    "load_guardrails": "guardrails",
    "render_guardrails": "guardrails.render",
    "evaluate_stack": "evaluation.precedence",
    "JobResult": "job.runner",
    "run_job": "job.runner",
    "JobConfig": "job.config",
    "load_job_config": "job.config",
}

if TYPE_CHECKING:
    from .aggregate.addresses import address_class_table, classify_address
    from .aggregate.edges import (
        EdgeTables,
        PartialEdges,
        aggregate_edges,
        finish_edges,
        merge_partials,
        partial_edges,
    )
    from .analysis.anomaly import Anomaly, Screening, screen_flows
    from .analysis.clustering.estimators import BehaviourClustering, SignatureGrouping
    from .analysis.clustering.features import CommunicationFeatures, communication_features
    from .analysis.graph import build_graph
    from .analysis.segments import SegmentProposal, propose_segments
    from .config import RecommendConfig, load_config
    from .evaluation.evaluator import Cluster, Verdict, evaluate, read_cluster
    from .evaluation.precedence import evaluate_stack
    from .evaluation.replay import Coverage, cluster_from_flows, replay
    from .guardrails import Guardrails, load_guardrails
    from .guardrails.render import render_guardrails
    from .ingest import FORMATS, FlowBatches, detect_format, iter_flow_batches, read_flows
    from .ingest.ledger import IngestLedger
    from .ingest.profile import FlowProfile, profile_flows
    from .ingest.schema import FLOW_SCHEMA, SCHEMA_VERSION
    from .job.config import JobConfig, load_job_config
    from .job.runner import JobResult, run_job
    from .pipeline import Recommendation, recommend, recommend_edges, resolve_guardrails
    from .policy import Evidence, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
    from .policy.dialects import DialectOptions, render_dialect
    from .policy.reader import read_policies
    from .report.graph_io import write_graph
    from .synthesis.decisions import (
        Decision,
        Decisions,
        dump_decisions,
        load_decisions,
        write_decisions_atomic,
    )
    from .synthesis.granularity import GranularityReport, granularity_report
    from .synthesis.synthesizer import synthesize


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'recommender' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(ModuleType):
    """The package module, kept from losing a public name to a submodule of the same name.

    Importing a submodule binds it as an attribute of the package: the first import of
    ``recommender.evaluation.replay`` (the old path of :mod:`recommender.evaluation.replay`, see
    :mod:`recommender._compat`) would make ``recommender.evaluation.replay`` the module instead of
    the function ``__all__`` promises. The function takes that place instead; the module stays in
    ``sys.modules``, so ``from recommender.evaluation.replay import Coverage`` keeps working.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and name in _LAZY:
            value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
_compat.install()


__all__ = [
    "FLOW_SCHEMA",
    "FORMATS",
    "SCHEMA_VERSION",
    "Anomaly",
    "BehaviourClustering",
    "Cluster",
    "CommunicationFeatures",
    "ConfigError",
    "Coverage",
    "Decision",
    "Decisions",
    "DialectOptions",
    "EdgeTables",
    "Evidence",
    "FlowBatches",
    "FlowFormatError",
    "FlowProfile",
    "FlowSourceError",
    "GitOpsError",
    "GranularityReport",
    "Guardrails",
    "IngestLedger",
    "InputError",
    "JobConfig",
    "JobResult",
    "LabelSelector",
    "NoFlowsError",
    "PartialEdges",
    "Peer",
    "Policy",
    "PolicySet",
    "PortSpec",
    "RecommendConfig",
    "Recommendation",
    "RecommenderError",
    "Rule",
    "SchemaError",
    "Screening",
    "SegmentProposal",
    "SignatureGrouping",
    "StorageError",
    "SynthesisError",
    "UnsupportedDialectError",
    "Verdict",
    "__version__",
    "address_class_table",
    "aggregate_edges",
    "build_graph",
    "classify_address",
    "cluster_from_flows",
    "communication_features",
    "detect_format",
    "dump_decisions",
    "evaluate",
    "evaluate_stack",
    "finish_edges",
    "granularity_report",
    "iter_flow_batches",
    "load_config",
    "load_decisions",
    "load_guardrails",
    "load_job_config",
    "merge_partials",
    "partial_edges",
    "profile_flows",
    "propose_segments",
    "read_cluster",
    "read_flows",
    "read_policies",
    "recommend",
    "recommend_edges",
    "render_dialect",
    "render_guardrails",
    "replay",
    "resolve_guardrails",
    "run_job",
    "screen_flows",
    "synthesize",
    "write_decisions_atomic",
    "write_graph",
]
