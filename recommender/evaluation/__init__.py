"""Evaluation: policies and flows in, verdicts out.

Takes a :class:`~recommender.policy.model.PolicySet` (proposed, or read from a cluster's YAML),
optional guardrails, and flows, and gives what each flow's verdict is under Kubernetes (and
Calico/Cilium precedence) semantics: coverage, false denies, over-permissiveness, diffs.

Public modules:

- :mod:`~recommender.evaluation.evaluator`: NetworkPolicy semantics (:func:`evaluate`);
- :mod:`~recommender.evaluation.precedence`: tiers and stacks (guardrails over application policy);
- :mod:`~recommender.evaluation.replay`: :func:`replay` of flows against a policy set;
- :mod:`~recommender.evaluation.rule_analysis`: broad, redundant and unused rules;
- :mod:`~recommender.evaluation.diff`: which flows change verdict between two policy sets;
- :mod:`~recommender.evaluation.validation`: held-out validation (learn early, test late);
- :mod:`~recommender.evaluation.guardrail_checks`: flows that guardrails deny, compliance checks.
"""
