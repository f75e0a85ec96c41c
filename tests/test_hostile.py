"""Hostile input: flow logs and policy files written by an attacker.

Flow logs carry attacker-influenced values (labels, names, namespaces, DNS names, HTTP paths);
policy files given to ``evaluate``/``diff`` may come from anywhere. Whatever they hold, the
tool raises nothing but :class:`~recommender.errors.RecommenderError`, accounts for every
record in the ledger, stays within bounded time and memory, and writes nothing invalid.
See SECURITY.md.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recommender import IngestLedger, RecommenderError, detect_format, read_flows
from recommender.errors import FlowSourceError, InputError
from recommender.policy.reader import read_policies

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_flows"
GOLDMANE = ROOT / "tests" / "data" / "goldmane"
VALIDATOR = ROOT.parent / "shared" / "tools" / "validate_manifests.py"

DEEP = 100_000


def _first_line(path: Path) -> str:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return str(fh.readline()).rstrip("\n")


FIRST = {
    "hubble": _first_line(SAMPLES / "hubble.jsonl.gz"),
    "calico": _first_line(SAMPLES / "calico.jsonl.gz"),
    "goldmane": _first_line(GOLDMANE / "emitter.ndjson"),
    "whisker": _first_line(GOLDMANE / "whisker.jsonl"),
}


def _read(path: Path, fmt: str | None) -> IngestLedger:
    """Read ``path``: a RecommenderError is an accepted answer; the ledger must balance."""
    ledger = IngestLedger()
    try:
        read_flows(path, format=fmt, ledger=ledger, workers=1)
    except RecommenderError:
        return ledger
    assert ledger.balanced, ledger.to_dict()
    return ledger


# ---------------------------------------------------------------------------------------------
# Deep nesting: a ledger skip (or a RecommenderError for a whole document), never RecursionError
# ---------------------------------------------------------------------------------------------

_NESTED = {
    "array": "[" * DEEP + "]" * DEEP,
    "open-array": "[" * DEEP,
    "in-flow": '{"flow":' + "[" * DEEP + "]" * DEEP + "}",
    "unknown-key": '{"x":' + "[" * DEEP + "]" * DEEP + "}",
    "in-endpoint": '{"flow":{"source":' + '{"a":' * DEEP + "1" + "}" * DEEP + "}}",
    "objects": '{"a":' * DEEP + "1" + "}" * DEEP,
}


@pytest.mark.parametrize("fmt", sorted(FIRST))
@pytest.mark.parametrize("kind", sorted(_NESTED))
def test_deep_nesting_is_skipped_with_a_reason(tmp_path: Path, fmt: str, kind: str) -> None:
    path = tmp_path / "deep.json"
    path.write_text(FIRST[fmt] + "\n" + _NESTED[kind] + "\n" + FIRST[fmt] + "\n")
    ledger = _read(path, fmt)
    if ledger.read:  # read as lines: the valid lines around it are kept
        assert ledger.read >= 3 and ledger.skipped_total >= 1 and ledger.used >= 1
    alone = tmp_path / "alone.json"
    alone.write_text(_NESTED[kind])  # the whole file is one deep document
    _read(alone, fmt)


@pytest.mark.parametrize("kind", sorted(_NESTED))
def test_deep_nesting_detection(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "deep.json"
    path.write_text(_NESTED[kind])
    with pytest.raises(FlowSourceError):
        detect_format(path)
    with pytest.raises(FlowSourceError):
        read_flows(path)


# ---------------------------------------------------------------------------------------------
# Policy files: no object construction, no alias expansion, no deep recursion
# ---------------------------------------------------------------------------------------------

_POLICY_HEAD = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: p
  namespace: d
"""


def _laughs(levels: int = 9) -> str:
    lines = ["x-laughs:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['echo pwned > /tmp/pwned']\n",
        _POLICY_HEAD + "spec: !!python/object:os.system {}\n",
        _POLICY_HEAD + "spec:\n  podSelector: !!python/name:os.system ''\n",
        "!!python/object/new:subprocess.Popen [['true']]\n",
    ],
    ids=["apply", "object", "name", "new"],
)
def test_python_tags_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match="cannot be parsed"):
        read_policies(path)


@pytest.mark.parametrize(
    "where",
    [
        "spec:\n  podSelector:\n    matchLabels: {app: *a6}\n",  # str() would expand 10^7
        "spec:\n  podSelector: {}\n  ingress:\n  - from: *a9\n",
        "spec:\n  podSelector: {}\n",  # unused: refused all the same
    ],
    ids=["label-value", "peers", "unused"],
)
def test_billion_laughs_is_refused_quickly(tmp_path: Path, where: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(_laughs() + "---\n" + _POLICY_HEAD + _laughs() + where)
    started = time.monotonic()
    with pytest.raises(InputError, match="alias"):
        read_policies(path)
    assert time.monotonic() - started < 2


def test_scalar_aliases_are_allowed_up_to_a_limit(tmp_path: Path) -> None:
    spec = "spec:\n  podSelector:\n    matchLabels: {app: &v web, tier: *v}\n"
    path = tmp_path / "p.yaml"
    path.write_text(_POLICY_HEAD + spec)
    (policy,) = read_policies(path).policies
    assert dict(policy.selector.match_labels) == {"app": "web", "tier": "web"}
    many = "  x: &v web\n" + "".join(f"  y{i}: *v\n" for i in range(101))
    path.write_text(_POLICY_HEAD + "  annotations:\n" + many.replace("  ", "    ") + spec)
    with pytest.raises(InputError, match="more than 100 YAML aliases"):
        read_policies(path)


def test_deeply_nested_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(_POLICY_HEAD + "spec: " + "[" * DEEP + "]" * DEEP + "\n")
    with pytest.raises(InputError, match="nested too deeply"):
        read_policies(path)
