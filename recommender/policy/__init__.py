"""Policies: the dialect-neutral model, its renderings and its files.

The lowest stage package (it imports only :mod:`recommender.errors`): every other stage builds
or reads a :class:`PolicySet`. Synthesis (:mod:`recommender.synthesis`) makes one from edges.

Public modules:

- :mod:`~recommender.policy.model`: :class:`PolicySet`, :class:`Policy`, :class:`Rule`, ...;
- :mod:`~recommender.policy.kubernetes`, :mod:`~recommender.policy.calico`,
  :mod:`~recommender.policy.cilium`: one writer per dialect, dispatched by
  :mod:`~recommender.policy.dialects` (no writer imports it);
- :mod:`~recommender.policy.writer` (the tree of files), :mod:`~recommender.policy.reader`
  (YAML back into a :class:`PolicySet`).
"""

from __future__ import annotations

from .model import Evidence, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

__all__ = ["Evidence", "LabelSelector", "Peer", "Policy", "PolicySet", "PortSpec", "Rule"]
