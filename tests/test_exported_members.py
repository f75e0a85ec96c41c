"""The public API: ``recommender.__all__`` is tidy, complete and names real objects."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import pkgutil
import re
import subprocess
import sys

import pytest

import recommender
import recommender.errors

# What a user of the library reaches for (see README and docs): each must be importable from
# the package itself, as the very object its module defines.
USER_FACING = (
    "read_flows",
    "iter_flow_batches",
    "detect_format",
    "FlowBatches",
    "FORMATS",
    "recommend",
    "Recommendation",
    "RecommendConfig",
    "load_config",
    "PolicySet",
    "Policy",
    "Rule",
    "Peer",
    "PortSpec",
    "LabelSelector",
    "Evidence",
    "aggregate_edges",
    "EdgeTables",
    "synthesize",
    "profile_flows",
    "FlowProfile",
    "IngestLedger",
    "FLOW_SCHEMA",
    "SCHEMA_VERSION",
    "__version__",
)


def _group(name: str) -> int:
    """isort-style groups, as ``__all__`` is written: CONSTANTS, then Classes, then the rest."""
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
        return 0
    if name[:1].isupper():
        return 1
    return 2


def test_all_is_sorted_as_written() -> None:
    names = list(recommender.__all__)
    assert names == sorted(names, key=lambda n: (_group(n), n))
    assert len(names) == len(set(names)), "a name is listed twice"


def test_every_name_in_all_exists() -> None:
    missing = [name for name in recommender.__all__ if not hasattr(recommender, name)]
    assert missing == []


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from recommender import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(recommender.__all__)


@pytest.mark.parametrize("name", USER_FACING)
def test_user_facing_names_are_exported(name: str) -> None:
    assert name in recommender.__all__
    assert getattr(recommender, name) is not None


@pytest.mark.parametrize("name", recommender.errors.__all__)
def test_every_error_class_is_exported(name: str) -> None:
    assert name in recommender.__all__
    cls = getattr(recommender, name)
    assert cls is getattr(recommender.errors, name)
    assert issubclass(cls, recommender.RecommenderError)


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(recommender.__path__, "recommender."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts) or info.name in ("recommender.cli",):
            continue  # private helpers, the CLI shell, python -m
        names.append(info.name)
    return names


# Modules whose public functions and classes are building blocks for users; the others
# (address classes, selectors, report rendering, the sample generator, the readers) are
# documented internals reachable through their module.
USER_MODULES = (
    "recommender.config",
    "recommender.aggregate.edges",
    "recommender.errors",
    "recommender.ingest",
    "recommender.ingest.ledger",
    "recommender.policy",
    "recommender.ingest.profile",
    "recommender.pipeline",
    "recommender.synthesis.synthesizer",
)


def test_user_modules_exist() -> None:
    assert set(USER_MODULES) <= set(_public_modules())


@pytest.mark.parametrize("module_name", USER_MODULES)
def test_public_classes_and_functions_of_user_modules_are_reachable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    unexported = []
    for name in exported:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if name in ("SkipExample", "Findings", "RuleRecord"):
            continue  # result parts: reached through IngestLedger / Recommendation attributes
        if getattr(recommender, name, None) is not obj:
            unexported.append(name)
    assert unexported == [], f"{module_name}: not reachable from recommender: {unexported}"


def test_version_matches_the_installed_distribution() -> None:
    assert recommender.__version__ == importlib.metadata.version("recommender")


def test_a_submodule_never_shadows_a_public_name_of_the_same_name() -> None:
    """``recommender.replay`` is the function even after the module
    ``recommender.evaluation.replay`` is first imported by something else (cluster_from_flows,
    recommend's self-check), and after its old path ``recommender.replay`` is imported."""
    code = (
        "import inspect, sys, warnings\n"
        "from recommender import cluster_from_flows, replay\n"
        "import recommender\n"
        "assert inspect.isfunction(replay), replay\n"
        "assert recommender.replay is replay, recommender.replay\n"
        "assert 'recommender.evaluation.replay' in sys.modules\n"
        "from recommender.evaluation.replay import Coverage\n"
        "assert Coverage.__module__ == 'recommender.evaluation.replay'\n"
        "with warnings.catch_warnings(record=True):\n"
        "    warnings.simplefilter('always')\n"
        "    import recommender.replay\n"
        "    from recommender.replay import Coverage as Old\n"
        "assert Old is Coverage and recommender.replay is replay, recommender.replay\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
