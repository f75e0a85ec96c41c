"""Calico's selector language: upstream's parser test table (libcalico-go/lib/selector/parser/
parser_test.go: selectorTests, badSelectors, canonicalisationTests) and a property test against a
straightforward reference evaluator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.evaluation.calico_selector import SelectorError, parse_selector

L = dict[str, str]

#: (selector, label maps it matches, label maps it does not): upstream's selectorTests.
SELECTOR_TESTS: list[tuple[str, list[L], list[L]]] = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    ('a == "b" && c == "d"', [{"a": "b", "c": "d"}],
     [{}, {"a": "b", "c": "e"}, {"a": "c", "c": "d"}, {"c": "d"}, {"a": "b"}]),
    ('a == "b" || c == "d"', [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}],
     [{}, {"a": "e", "c": "e"}, {"c": "e"}, {"a": "e"}]),
    ("""a in {"'", '"', "c"}""", [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    ("""a not in {"'", '"', "c"}""", [{}, {"a": "e"}], [{"a": "c"}, {"a": '"'}, {"a": "'"}]),
    ("a == 'a'", [{"a": "a"}], []),
    ('a == "a"', [{"a": "a"}], []),
    ('a != "b"', [{"a": "a"}], []),
    ('a != "a"', [{}], []),
    ('a contains "a"', [{"a": "a"}, {"a": "bab"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"b": "aaa"}]),
    ('a starts with "a"', [{"a": "a"}, {"a": "abb"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "baa"}, {"b": "aaa"}]),
    ('a ends with "a"', [{"a": "a"}, {"a": "bba"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "aab"}, {"b": "aaa"}]),
    ('a in {"a"}', [{"a": "a"}], []),
    ('!a in {"a"}', [{"a": "b"}], []),
    ('a in {"a", "b"}', [{"a": "a"}], []),
    ('a in {"a", "b"}', [{"a": "b"}], []),
    ('a not in {"d", "e"}', [{"a": "a"}], []),
    ("has(a)", [{"a": "b"}], []),
    ("!has(a)", [{"b": "b"}], []),
    ("", [{}], []),
    (" ", [{}], []),
    ("", [{"a": "b"}], []),
    ("all()", [{}], []),
    (" all()", [{}], []),
    (" all()", [{"a": "b"}], []),
    ("global()", [{}], []),
    (" global()", [{}], []),
    (" global()", [{"a": "b"}], []),
    ("a == 'a'", [], [{"a": "b"}]),
    ("a == 'a'", [], [{}]),
    ('a != "a"', [], [{"a": "a"}]),
    ("a != 'a'", [], [{"a": "a"}]),
    ('a in {"a"}', [], [{"a": "b"}]),
    ('a not in {"a"}', [], [{"a": "a"}]),
    ('a in {"a", "b"}', [], [{"a": "c"}]),
    ("has(b)", [], [{"a": "b"}]),
    ("!!has(b)", [], [{"a": "b"}]),
    ("! has(a)", [], [{"a": "b"}]),
    ("!has(a)", [], [{"a": "b"}]),
    ("!!! has(a)", [], [{"a": "b"}]),
    ("!!!has(a)", [], [{"a": "b"}]),
    ("!! ! has(a)", [], [{"a": "b"}]),
    ("! !!has(a)", [], [{"a": "b"}]),
    ("a == 'a1' && b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && !b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("!a == 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], []),
    ("!has(b) && has(a)", [{"a": "a"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], []),
    ("!(has(b) || !has(a))", [{"a": "a"}], []),
    ("a == 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' || b != 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("! a == 'a1' || ! b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
]

BAD_SELECTORS = [
    "b == b", "b contains b", "b starts with b", "b ends with b", "'b1' == b", "b", "a b", "!",
    'foo == "bar" &', 'foo == "bar" |', "foo != ||", 'foo in {"", ||', 'foo in ""', '"FOO',
    "\"FOO'", "'FOO", "(", '(a == "foo"', ")", "()", "%", 'a == "b" && %', 'a == "b" || %',
    "a ", "has(foo) &&",
    # beyond upstream's table, from its tokenizer: no space in "has(", no newline, label length
    "has (a)", 'a == "b"\n', "x" * 513 + " == 'a'",
]

CANONICAL = [
    ("", "all()"),
    (" all() ", "all()"),
    (" (all() )", "all()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'),
    ("a == \"'\"", "a == \"'\""),
    ("a == '\"'", "a == '\"'"),
    ("a contains '\"'", "a contains '\"'"),
    ("a contains \"'\"", "a contains \"'\""),
    ("a startswith '\"'", "a starts with '\"'"),
    ("a endswith \"'\"", "a ends with \"'\""),
    ("a!='\"'", "a != '\"'"),
    ('a in {"d"}', 'a in {"d"}'),
    ('a in {"a", "b"}', 'a in {"a", "b"}'),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}'),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}'),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}'),
    # upstream's visitor table, without the prefix
    ("k == 'v' && x == 'y'", '(k == "v" && x == "y")'),
    ("k == 'v' || has(x)", '(k == "v" || has(x))'),
    ("!(k == 'v')", '!k == "v"'),
    ("k not in {'v'}", 'k not in {"v"}'),
    ("!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
     '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})'),
]


@pytest.mark.parametrize(("text", "matches", "non_matches"), SELECTOR_TESTS)
def test_upstream_selector_table(text: str, matches: list[L], non_matches: list[L]) -> None:
    selector = parse_selector(text)
    again = parse_selector(str(selector))
    for labels in matches:
        assert selector.evaluate(labels) and again.evaluate(labels), (text, labels)
    for labels in non_matches:
        assert not selector.evaluate(labels) and not again.evaluate(labels), (text, labels)


@pytest.mark.parametrize("text", BAD_SELECTORS)
def test_upstream_bad_selectors_are_rejected(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_upstream_canonical_form_round_trips(text: str, canonical: str) -> None:
    assert str(parse_selector(text)) == canonical
    assert str(parse_selector(canonical)) == canonical
    assert parse_selector(canonical) == parse_selector(text)


def test_prefix_visitor_as_upstream() -> None:
    selector = parse_selector("!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))")
    assert str(selector.prefixed("visited/")) == (
        '!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})'
    )


# --- property: the parser agrees with a reference evaluator of the expression it was given ---

KEYS = st.sampled_from(["a", "b", "app.kubernetes.io/name", "x-1"])
VALUES = st.sampled_from(["", "v", "web", "we", "'", '"', "a b"])
SPACE = st.sampled_from(["", " ", "\t", "  "])


def _quoted(value: str) -> st.SearchStrategy[str]:
    options = [q for q in ("'", '"') if q not in value]
    return st.sampled_from(options).map(lambda q: f"{q}{value}{q}")


@st.composite
def expressions(draw: Any, depth: int = 3) -> tuple[str, Any]:
    """(text, reference tree): a tree is a tuple the reference evaluator below understands."""
    kind = draw(st.sampled_from(
        ["op", "op", "set", "has", "all"] + (["not", "and", "or", "paren"] if depth else [])
    ))
    s = draw(SPACE)
    if kind == "op":
        key, value = draw(KEYS), draw(VALUES)
        op = draw(st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]))
        written = {"starts with": draw(st.sampled_from(["starts with", "startswith",
                                                        "starts  with"])),
                   "ends with": draw(st.sampled_from(["ends with", "endswith"]))}.get(op, op)
        gap = " " if written[0].isalpha() else s
        return f"{key}{gap}{written}{gap or ' '}{draw(_quoted(value))}", ("op", key, op, value)
    if kind == "set":
        key = draw(KEYS)
        values = draw(st.lists(VALUES, max_size=3))
        op = draw(st.sampled_from(["in", "not in", "notin"]))
        items = ",".join(s + draw(_quoted(v)) for v in values)
        trailing = draw(st.sampled_from(["", ","])) if values else ""
        return f"{key} {op} {{{items}{trailing}{s}}}", ("set", key, op != "in", set(values))
    if kind == "has":
        key = draw(KEYS)
        return f"has({s}{key}{s})", ("has", key)
    if kind == "all":
        return draw(st.sampled_from(["all()", "global()", f"all({s})"])), ("all",)
    if kind == "not":
        text, tree = draw(expressions(depth - 1))
        bangs = draw(st.integers(1, 3))
        inner = f"({text})"
        return "!" * bangs + s + inner, ("not", tree) if bangs % 2 else tree
    if kind == "paren":
        text, tree = draw(expressions(depth - 1))
        return f"({s}{text}{s})", tree
    parts = draw(st.lists(expressions(depth - 1), min_size=2, max_size=3))
    joiner = "&&" if kind == "and" else "||"
    # operands of && and || are parenthesised, so the test does not depend on precedence
    # (test_precedence checks that separately)
    return f"{s}{joiner}{s}".join(f"({t})" for t, _ in parts), (kind, [t for _, t in parts])


def reference(tree: Any, labels: Mapping[str, str]) -> bool:
    kind = tree[0]
    if kind == "op":
        _, key, op, value = tree
        if key not in labels:
            return op == "!="
        found = labels[key]
        return {
            "==": found == value, "!=": found != value, "contains": value in found,
            "starts with": found.startswith(value), "ends with": found.endswith(value),
        }[op]
    if kind == "set":
        _, key, negated, values = tree
        return (labels.get(key) not in values) if negated else (labels.get(key) in values)
    if kind == "has":
        return tree[1] in labels
    if kind == "all":
        return True
    if kind == "not":
        return not reference(tree[1], labels)
    if kind == "and":
        return all(reference(t, labels) for t in tree[1])
    return any(reference(t, labels) for t in tree[1])


LABELS = st.dictionaries(KEYS, VALUES, max_size=4)


@settings(max_examples=300, deadline=None)
@given(expressions(), st.lists(LABELS, min_size=1, max_size=6))
def test_parser_agrees_with_reference_and_round_trips(
    expression: tuple[str, Any], label_sets: list[L]
) -> None:
    text, tree = expression
    selector = parse_selector(text)
    canonical = parse_selector(str(selector))
    # the canonical form is a fixed point once nested negations collapse (as upstream's:
    # ``!(!x)`` prints ``!!x``, which parses as ``x``)
    assert str(parse_selector(str(canonical))) == str(canonical)
    for labels in label_sets:
        assert selector.evaluate(labels) == reference(tree, labels), (text, labels)
        assert canonical.evaluate(labels) == selector.evaluate(labels), (text, labels)


@settings(max_examples=200, deadline=None)
@given(st.lists(expressions(1), min_size=3, max_size=3), st.lists(LABELS, min_size=1,
                                                                   max_size=6))
def test_precedence_and_binds_tighter_than_or(
    parts: list[tuple[str, Any]], label_sets: list[L]
) -> None:
    """``a || b && c`` is ``a || (b && c)``; ``!`` applies to one operation only."""
    (ta, a), (tb, b), (tc, c) = parts
    selector = parse_selector(f"({ta}) || ({tb}) && ({tc})")
    negated = parse_selector(f"!({ta}) && ({tb})")
    for labels in label_sets:
        expected = reference(a, labels) or (reference(b, labels) and reference(c, labels))
        assert selector.evaluate(labels) == expected
        assert negated.evaluate(labels) == (not reference(a, labels) and reference(b, labels))
