"""Deterministic flow generators: the bundled sample, benchmark inputs, test data.

Nothing at run time imports this package; it makes the inputs the tests, the benchmarks and
``sample_flows/make_samples.py`` use.

- :mod:`~recommender.samples.generator`: a realistic small cluster as data and its traffic,
  written as Hubble, Calico or canonical flows;
- :mod:`~recommender.samples.bulk`: vectorised canonical Parquet for the large benchmarks;
- :mod:`~recommender.samples.wide`: a wide cluster (thousands of workloads in hundreds of
  namespaces, a few edges each) for the scaling benchmark.
"""

from .generator import (
    DEFAULT_SCENARIO,
    Connection,
    DnsInfo,
    EdgeSpec,
    ExpectedEdge,
    HttpInfo,
    NodeSpec,
    Peer,
    Pod,
    Scenario,
    ScheduledSpec,
    ServiceRef,
    WorkloadSpec,
    default_scenario,
    expected_edges,
    generate_connections,
    scaled_scenario,
    write_calico_jsonl,
    write_canonical_csv,
    write_canonical_parquet,
    write_hubble_jsonl,
)

__all__ = [
    "DEFAULT_SCENARIO",
    "Connection",
    "DnsInfo",
    "EdgeSpec",
    "ExpectedEdge",
    "HttpInfo",
    "NodeSpec",
    "Peer",
    "Pod",
    "Scenario",
    "ScheduledSpec",
    "ServiceRef",
    "WorkloadSpec",
    "default_scenario",
    "expected_edges",
    "generate_connections",
    "scaled_scenario",
    "write_calico_jsonl",
    "write_canonical_csv",
    "write_canonical_parquet",
    "write_hubble_jsonl",
]
