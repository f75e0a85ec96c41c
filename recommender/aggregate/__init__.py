"""Aggregation: canonical flow rows in, edges out.

Takes the canonical flow table (or its batches) from :mod:`recommender.ingest` and gives
:class:`~recommender.aggregate.edges.EdgeTables`: one row per observed (source workload,
destination workload, port, protocol) with its evidence, counted in DuckDB.

Public modules:

- :mod:`~recommender.aggregate.edges`: :func:`aggregate_edges`, partial and merged aggregates;
- :mod:`~recommender.aggregate.owners`: each row's workload resolved to its owner (a Job run to
  its CronJob, a ReplicaSet to its Deployment) before aggregation;
- :mod:`~recommender.aggregate.parquet_scan`: the same aggregation of canonical Parquet files,
  read by DuckDB itself (columns pruned, the time window pushed down, labels read per pod);
- :mod:`~recommender.aggregate.addresses`: address classes (pod, node, Service, private, public);
- :mod:`~recommender.aggregate.selectors`: the stable labels of a workload, that survive rollouts.
"""
