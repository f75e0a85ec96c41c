"""Synthesis: edges in, a :class:`~recommender.policy.model.PolicySet` out.

Takes :class:`~recommender.aggregate.edges.EdgeTables` (after screening) and gives one policy
per workload with its rules and their evidence, plus :class:`Findings` for the report.

Public modules:

- :mod:`~recommender.synthesis.synthesizer`: :func:`synthesize`, rules and their evidence;
- :mod:`~recommender.synthesis.refused`: the refused set (denied, failed, excluded flows) no
  widening may admit;
- :mod:`~recommender.synthesis.decisions`: the decisions file (a reviewer's reject, allow,
  trust and exclude), read, checked and written back;
- :mod:`~recommender.synthesis.decided`: a decisions file applied to one run's edges;
- :mod:`~recommender.synthesis.enrich`: L7 (HTTP) detail on the synthesized rules;
- :mod:`~recommender.synthesis.hosts`: policies for host-network workloads and nodes;
- :mod:`~recommender.synthesis.inventory`: named address groups (NetworkSets, CIDR groups);
- :mod:`~recommender.synthesis.granularity`: how fine the policies should be, at what cost.
"""

from .synthesizer import Findings, RuleRecord, synthesize

__all__ = ["Findings", "RuleRecord", "synthesize"]
