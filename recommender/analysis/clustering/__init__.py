"""Clustering of workloads by how they communicate, and the rule compaction built on it.

- :mod:`~recommender.analysis.clustering.features`: one feature row per workload;
- :mod:`~recommender.analysis.clustering.core`: the grouping algorithms (no SciPy at run time);
- :mod:`~recommender.analysis.clustering.estimators`: scikit-learn style estimators
  (:class:`BehaviourClustering`, :class:`SignatureGrouping`);
- :mod:`~recommender.analysis.clustering.compaction`: merging rules of workloads that behave alike.
"""
