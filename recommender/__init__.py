"""recommender: least-privilege Kubernetes network policies from flow logs.

The public API is re-exported here; see ``docs/`` for the guide.
"""

from __future__ import annotations

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
from .schema import FLOW_SCHEMA, SCHEMA_VERSION

__version__ = "0.1.0"

__all__ = [
    "FLOW_SCHEMA",
    "FORMATS",
    "SCHEMA_VERSION",
    "ConfigError",
    "FlowBatches",
    "FlowFormatError",
    "FlowSourceError",
    "IngestLedger",
    "InputError",
    "RecommenderError",
    "SchemaError",
    "SynthesisError",
    "UnsupportedDialectError",
    "__version__",
    "detect_format",
    "iter_flow_batches",
    "read_flows",
]
