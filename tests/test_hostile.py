"""Hostile input: flow logs and policy files written by an attacker.

Flow logs carry attacker-influenced values (labels, names, namespaces, DNS names, HTTP paths);
policy files given to ``evaluate``/``diff`` may come from anywhere. Whatever they hold, the
tool raises nothing but :class:`~recommender.errors.RecommenderError`, accounts for every
record in the ledger, stays within bounded time and memory, and writes nothing invalid.
See SECURITY.md.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recommender import IngestLedger, RecommenderError, detect_format, read_flows
from recommender.errors import FlowSourceError

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
