"""Old import paths of the modules that moved into stage packages (kept for one release).

Before 0.2 the package was flat (``recommender.edges``, ``recommender.replay``, ...). Importing
one of those names still works: it gives the module at its new place and warns with a
:class:`DeprecationWarning` that says where that is. Nothing else imports this table.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Final

#: Old dotted name -> new dotted name (docs/architecture.md has the whole layout).
MOVED: Final[dict[str, str]] = {
    "recommender._hubble_worker": "recommender.ingest._hubble_worker",
    "recommender.ledger": "recommender.ingest.ledger",
    "recommender.profile": "recommender.ingest.profile",
    "recommender.schema": "recommender.ingest.schema",
    "recommender.addresses": "recommender.aggregate.addresses",
    "recommender.edges": "recommender.aggregate.edges",
    "recommender.selectors": "recommender.aggregate.selectors",
    "recommender.graph": "recommender.analysis.graph",
    "recommender.anomaly": "recommender.analysis.anomaly",
    "recommender.segments": "recommender.analysis.segments",
    "recommender.clustering": "recommender.analysis.clustering.estimators",
    "recommender.clustering_core": "recommender.analysis.clustering.core",
    "recommender.clustering_features": "recommender.analysis.clustering.features",
    "recommender.clustering_compaction": "recommender.analysis.clustering.compaction",
    "recommender.granularity": "recommender.synthesis.granularity",
    "recommender.enrich": "recommender.synthesis.enrich",
    "recommender.hosts": "recommender.synthesis.hosts",
    "recommender.inventory": "recommender.synthesis.inventory",
    "recommender.evaluator": "recommender.evaluation.evaluator",
    "recommender.precedence": "recommender.evaluation.precedence",
    "recommender.replay": "recommender.evaluation.replay",
    "recommender.rule_analysis": "recommender.evaluation.rule_analysis",
    "recommender.diff": "recommender.evaluation.diff",
    "recommender.validation": "recommender.evaluation.validation",
    "recommender.guardrails.checks": "recommender.evaluation.guardrail_checks",
    "recommender.guardrails.report": "recommender.report.guardrails",
    "recommender.report_html": "recommender.report.html",
    "recommender.graph_svg": "recommender.report.graph_svg",
    "recommender.graph_html": "recommender.report.graph_html",
    "recommender.graph_io": "recommender.report.graph_io",
    "recommender.job_config": "recommender.job.config",
    "recommender.job_log": "recommender.job.log",
    "recommender.state": "recommender.job.state",
    "recommender.storage": "recommender.job.storage",
    "recommender.gitops": "recommender.job.gitops",
    "recommender.bulk_samples": "recommender.samples.bulk",
}


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module at its new place (the same module object)."""

    def __init__(self, new: str) -> None:
        self.new = new
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new}; the old path goes away in the next release",
            DeprecationWarning, stacklevel=2,
        )
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported at its new place. Only its ``__spec__``,
        which the import system has just set to the old name's, is put back (relative imports
        inside the module's functions read it)."""
        module.__spec__ = self.spec


class _OldPaths(importlib.abc.MetaPathFinder):
    """Finds the old names of :data:`MOVED`."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Put the finder on :data:`sys.meta_path` (once)."""
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())
