"""recommender: least-privilege Kubernetes network policies from flow logs.

The public API is re-exported here; see ``docs/`` for the guide.
"""

from __future__ import annotations

__version__ = "0.1.0"

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

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
    "address_class_table": "addresses",
    "classify_address": "addresses",
    "RecommendConfig": "config",
    "load_config": "config",
    "EdgeTables": "edges",
    "PartialEdges": "edges",
    "aggregate_edges": "edges",
    "finish_edges": "edges",
    "merge_partials": "edges",
    "partial_edges": "edges",
    "FORMATS": "ingest",
    "FlowBatches": "ingest",
    "detect_format": "ingest",
    "iter_flow_batches": "ingest",
    "read_flows": "ingest",
    "IngestLedger": "ledger",
    "Evidence": "policy",
    "LabelSelector": "policy",
    "Peer": "policy",
    "Policy": "policy",
    "PolicySet": "policy",
    "PortSpec": "policy",
    "Rule": "policy",
    "FlowProfile": "profile",
    "profile_flows": "profile",
    "Recommendation": "pipeline",
    "recommend": "pipeline",
    "FLOW_SCHEMA": "schema",
    "SCHEMA_VERSION": "schema",
    "synthesize": "synthesis",
    "Cluster": "evaluator",
    "Verdict": "evaluator",
    "evaluate": "evaluator",
    "read_cluster": "evaluator",
    "read_policies": "policy.reader",
    "DialectOptions": "policy.dialects",
    "render_dialect": "policy.dialects",
    "build_graph": "graph",
    "write_graph": "graph_io",
    "SegmentProposal": "segments",
    "propose_segments": "segments",
    "Coverage": "replay",
    "cluster_from_flows": "replay",
    "replay": "replay",
    "JobResult": "job",
    "run_job": "job",
    "JobConfig": "job_config",
    "load_job_config": "job_config",
}

if TYPE_CHECKING:
    from .addresses import address_class_table, classify_address
    from .config import RecommendConfig, load_config
    from .edges import (
        EdgeTables,
        PartialEdges,
        aggregate_edges,
        finish_edges,
        merge_partials,
        partial_edges,
    )
    from .evaluator import Cluster, Verdict, evaluate, read_cluster
    from .graph import build_graph
    from .graph_io import write_graph
    from .ingest import FORMATS, FlowBatches, detect_format, iter_flow_batches, read_flows
    from .job import JobResult, run_job
    from .job_config import JobConfig, load_job_config
    from .ledger import IngestLedger
    from .pipeline import Recommendation, recommend
    from .policy import Evidence, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
    from .policy.dialects import DialectOptions, render_dialect
    from .policy.reader import read_policies
    from .profile import FlowProfile, profile_flows
    from .replay import Coverage, cluster_from_flows, replay
    from .schema import FLOW_SCHEMA, SCHEMA_VERSION
    from .segments import SegmentProposal, propose_segments
    from .synthesis import synthesize


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
    ``recommender.replay`` (by :func:`cluster_from_flows`, or by :func:`recommend`'s self-check)
    would make ``recommender.replay`` the module instead of the function ``__all__`` promises.
    The function takes that place instead; the module stays in ``sys.modules``, so
    ``from recommender.replay import Coverage`` keeps working.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, ModuleType)
            and _LAZY.get(name) == name
            and value.__name__ == f"{__name__}.{name}"
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "FLOW_SCHEMA",
    "FORMATS",
    "SCHEMA_VERSION",
    "Cluster",
    "ConfigError",
    "Coverage",
    "DialectOptions",
    "EdgeTables",
    "Evidence",
    "FlowBatches",
    "FlowFormatError",
    "FlowProfile",
    "FlowSourceError",
    "GitOpsError",
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
    "SegmentProposal",
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
    "detect_format",
    "evaluate",
    "finish_edges",
    "iter_flow_batches",
    "load_config",
    "load_job_config",
    "merge_partials",
    "partial_edges",
    "profile_flows",
    "propose_segments",
    "read_cluster",
    "read_flows",
    "read_policies",
    "recommend",
    "render_dialect",
    "replay",
    "run_job",
    "synthesize",
    "write_graph",
]
