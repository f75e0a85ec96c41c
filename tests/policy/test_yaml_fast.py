"""The fast YAML emitter writes exactly PyYAML's bytes, or steps aside."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.policy._yaml import _FastEmitter, _pyyaml_dump_all, dump_yaml, load_yaml_documents

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["80", "on", "y", "2001-12-14", "1e3", "a: b", "-x", "? q", "#c", "", " s",
                     "10.0.0.0/8", "app.kubernetes.io/name", "a" * 130, "l\nm", "\x85", "~"]),
)
_scalar = st.one_of(_text, st.integers(), st.booleans(), st.none())
_docs = st.lists(
    st.dictionaries(
        _text,
        st.recursive(
            _scalar,
            lambda inner: st.one_of(
                st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)
            ),
            max_leaves=20,
        ),
        min_size=1,
        max_size=5,
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=400)
@given(_docs)
def test_fast_emitter_matches_pyyaml_or_declines(docs: list[dict[str, object]]) -> None:
    fast = _FastEmitter().dump_all(docs)
    if fast is not None:
        assert fast == _pyyaml_dump_all(docs)
    assert load_yaml_documents(dump_yaml(docs)) == docs


def test_declines_what_it_does_not_write() -> None:
    assert _FastEmitter().dump_all([{"a" * 130: 1}]) is None  # complex key
    assert _FastEmitter().dump_all([{"a": 1.5}]) is None  # floats are PyYAML's
    assert _FastEmitter().dump_all([{}]) is None


@pytest.mark.parametrize("path", sorted(GOLDEN.rglob("*.yaml")), ids=lambda p: p.name)
def test_golden_manifests_take_the_fast_path(path: Path) -> None:
    docs = load_yaml_documents(path.read_text(encoding="utf-8"))
    if not docs:
        pytest.skip("no documents")
    fast = _FastEmitter().dump_all(docs)
    assert fast is not None
    assert fast == _pyyaml_dump_all(docs)
