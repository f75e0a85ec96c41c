"""Analysis: edges in, findings about them out (nothing here writes a policy).

Takes :class:`~recommender.aggregate.edges.EdgeTables` and gives the communication graph,
anomaly screening (scans, lateral movement), proposed segments and behaviour clusters.

Public modules:

- :mod:`~recommender.analysis.graph`: :func:`build_graph`, the communication graph (networkx);
- :mod:`~recommender.analysis.anomaly`: :func:`screen_flows`, what is left out of learning;
- :mod:`~recommender.analysis.segments`: :func:`propose_segments`;
- :mod:`recommender.analysis.clustering`: workload clustering and rule compaction.
"""
