"""recommender: least-privilege Kubernetes network policies from flow logs.

The public API is re-exported here; see ``docs/`` for the guide.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import RecommendConfig, load_config
from .edges import EdgeTables, aggregate_edges
from .errors import (
    ConfigError,
    FlowFormatError,
    FlowSourceError,
    InputError,
    RecommenderError,
    SchemaError,
    SynthesisError,
    UnsupportedDialectError,
)
from .ingest import FORMATS, FlowBatches, detect_format, iter_flow_batches, read_flows
from .ledger import IngestLedger
from .policy import Evidence, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
from .profile import FlowProfile, profile_flows
from .recommend import Recommendation, recommend
from .schema import FLOW_SCHEMA, SCHEMA_VERSION
from .synthesize import synthesize

__all__ = [
    "FLOW_SCHEMA",
    "FORMATS",
    "SCHEMA_VERSION",
    "ConfigError",
    "EdgeTables",
    "Evidence",
    "FlowBatches",
    "FlowFormatError",
    "FlowProfile",
    "FlowSourceError",
    "IngestLedger",
    "InputError",
    "LabelSelector",
    "Peer",
    "Policy",
    "PolicySet",
    "PortSpec",
    "RecommendConfig",
    "Recommendation",
    "RecommenderError",
    "Rule",
    "SchemaError",
    "SynthesisError",
    "UnsupportedDialectError",
    "__version__",
    "aggregate_edges",
    "detect_format",
    "iter_flow_batches",
    "load_config",
    "profile_flows",
    "read_flows",
    "recommend",
    "synthesize",
]
