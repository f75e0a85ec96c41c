"""The decisions file: exactly the documented format, validated with the entry's index and
field, written back byte for byte, replaced atomically."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recommender.errors import ConfigError
from recommender.synthesis.decisions import (
    Decision,
    Decisions,
    dump_decisions,
    load_decisions,
    parse_decisions,
    write_decisions_atomic,
)

#: The example of issue 17 / docs/decisions.md, comments removed, as dump_decisions writes it.
EXAMPLE = """\
apiVersion: recommender.io/v1
kind: Decisions
decisions:
- action: reject
  from: shop/frontend
  to: shop/adservice
  port: 9555
  protocol: TCP
  reason: the ads service is being retired
- action: allow
  from: shop/recommendationservice
  to: shop/currencyservice
  port: 7000
  protocol: TCP
  reason: needed by the next release
- action: trust
  from: monitoring/scanner
  to: '*'
- action: exclude
  workload: shop/debug
- action: exclude
  namespace: sandbox
  expires: 2026-01-31
"""

COMMENTED = """\
apiVersion: recommender.io/v1
kind: Decisions
decisions:
- action: reject            # never allow this observed edge
  from: shop/frontend       # namespace/workload, or a CIDR, or "world"
  to: shop/adservice
  port: 9555
  protocol: TCP
  reason: the ads service is being retired
- action: allow             # allow it although it was not observed
  from: shop/recommendationservice
  to: shop/currencyservice
  port: 7000
  protocol: TCP
  reason: needed by the next release
- action: trust             # learn this edge although screening excluded it
  from: monitoring/scanner
  to: "*"                   # any peer
- action: exclude           # no policy for this workload or namespace
  workload: shop/debug      # or namespace: sandbox
- action: exclude
  namespace: sandbox
  expires: 2026-01-31
"""


def test_the_documented_example_reads_and_writes_back_exactly() -> None:
    decisions = parse_decisions(COMMENTED)
    assert [d.action for d in decisions] == ["reject", "allow", "trust", "exclude", "exclude"]
    first = decisions.entries[0]
    assert (first.from_, first.to, first.port, first.protocol) == (
        "shop/frontend",
        "shop/adservice",
        9555,
        "TCP",
    )
    assert decisions.entries[2].to == "*"
    assert decisions.entries[4].expires == date(2026, 1, 31)
    assert dump_decisions(decisions) == EXAMPLE
    assert parse_decisions(EXAMPLE) == decisions


def test_expiry_is_judged_against_the_day_given() -> None:
    d = parse_decisions(EXAMPLE)
    assert [i for i, _ in d.active(date(2026, 1, 30))] == [0, 1, 2, 3, 4]
    assert [i for i, _ in d.active(date(2026, 1, 31))] == [0, 1, 2, 3]


def _entry(body: str) -> str:
    return (
        "apiVersion: recommender.io/v1\nkind: Decisions\ndecisions:\n- action: exclude\n"
        "  namespace: ok\n" + body
    )


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ("- action: deny\n  from: a/b\n  to: c/d\n", "decisions[1].action"),
        ("- from: a/b\n  to: c/d\n", "decisions[1].action"),
        ("- action: reject\n  to: c/d\n", "decisions[1].from"),
        ("- action: reject\n  from: a/b\n", "decisions[1].to"),
        ("- action: reject\n  from: Shop/b\n  to: c/d\n", "decisions[1].from"),
        ("- action: reject\n  from: a/b\n  to: 10.0.0.1/8\n", "decisions[1].to"),
        (
            "- action: reject\n  from: a/b\n  to: c/d\n  port: 70000\n  protocol: TCP\n",
            "decisions[1].port",
        ),
        (
            "- action: reject\n  from: a/b\n  to: c/d\n  port: '80'\n  protocol: TCP\n",
            "decisions[1].port",
        ),
        ("- action: reject\n  from: a/b\n  to: c/d\n  port: 80\n", "decisions[1].protocol"),
        ("- action: reject\n  from: a/b\n  to: c/d\n  protocol: ICMP\n", "decisions[1].protocol"),
        ("- action: allow\n  from: a/b\n  to: c/d\n  protocol: TCP\n", "decisions[1].port"),
        (
            "- action: allow\n  from: a/b\n  to: '*'\n  port: 1\n  protocol: TCP\n",
            "decisions[1].to",
        ),
        (
            "- action: allow\n  from: world\n  to: 10.0.0.0/8\n  port: 1\n  protocol: TCP\n",
            "decisions[1].from",
        ),
        ("- action: exclude\n  workload: a/b\n  namespace: a\n", "decisions[1].workload"),
        ("- action: exclude\n  from: a/b\n", "decisions[1].from"),
        ("- action: exclude\n  workload: a\n", "decisions[1].workload"),
        ("- action: exclude\n  namespace: A_B\n", "decisions[1].namespace"),
        ("- action: exclude\n  namespace: a\n  expires: soon\n", "decisions[1].expires"),
        ("- action: exclude\n  namespace: a\n  colour: red\n", "decisions[1].colour"),
        ("- action: exclude\n  namespace: a\n  reason: [x]\n", "decisions[1].reason"),
        ("- just text\n", "decisions[1].action"),
        ("- action: accept\n  from: a/b\n  flags: [rare]\n", "decisions[1].to"),
        ("- action: accept\n  from: a/b\n  to: c/d\n  flags: rare\n", "decisions[1].flags"),
        ("- action: accept\n  from: a/b\n  to: c/d\n  flags: ['Rare!']\n",
         "decisions[1].flags"),
        ("- action: reject\n  from: a/b\n  to: c/d\n  flags: [rare]\n", "decisions[1].flags"),
    ],
)
def test_errors_name_the_entry_and_the_field(entry: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_decisions(_entry(entry), "d.yaml")
    message = str(info.value)
    assert message.startswith("d.yaml: ") and f"{where}:" in message, message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("apiVersion: v1\nkind: Decisions\ndecisions: []\n", "apiVersion"),
        ("apiVersion: recommender.io/v1\nkind: Policy\ndecisions: []\n", "kind"),
        ("apiVersion: recommender.io/v1\nkind: Decisions\ndecisions: {}\n", "decisions"),
        ("apiVersion: recommender.io/v1\nkind: Decisions\nextra: 1\n", "extra"),
        ("[1, 2\n", "not valid YAML"),
    ],
)
def test_file_level_errors(text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_decisions(text)


def test_an_empty_file_holds_no_decisions_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    assert load_decisions(tmp_path / "empty.yaml") == Decisions()
    with pytest.raises(ConfigError, match="cannot be read"):
        load_decisions(tmp_path / "missing.yaml")


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "policies" / "decisions.yaml"
    decisions = parse_decisions(EXAMPLE)
    write_decisions_atomic(path, decisions)
    assert path.read_text() == EXAMPLE
    smaller = decisions.without_entry(decisions.entries[0])
    write_decisions_atomic(path, smaller)
    assert load_decisions(path) == smaller
    assert sorted(p.name for p in path.parent.iterdir()) == ["decisions.yaml"]


def test_constructing_a_wrong_decision_in_python_fails_too() -> None:
    with pytest.raises(ConfigError, match=r"decision\.port"):
        Decision("reject", from_="a/b", to="c/d", port=0, protocol="TCP")
    ok = Decision("allow", from_="a/b", to="10.0.0.0/24", port=443, protocol="TCP")
    assert ok.describe() == "allow a/b -> 10.0.0.0/24 TCP/443"


_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
_workloads = st.builds(lambda n, w: f"{n}/{w}", _names, _names)
_ends = st.one_of(
    _workloads,
    st.sampled_from(["world", "10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"]),
)
_reason = st.one_of(
    st.none(),
    st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
        max_size=40,
    ),
)
_dates = st.one_of(st.none(), st.dates(date(2000, 1, 1), date(2100, 1, 1)))


@st.composite
def _decision(draw: st.DrawFn) -> Decision:
    action = draw(st.sampled_from(["reject", "allow", "trust", "exclude", "accept"]))
    reason, expires = draw(_reason), draw(_dates)
    if action == "exclude":
        if draw(st.booleans()):
            return Decision(action, workload=draw(_workloads), reason=reason, expires=expires)
        return Decision(action, namespace=draw(_names), reason=reason, expires=expires)
    src = draw(_workloads) if action == "allow" else draw(st.one_of(_ends, st.just("*")))
    dst = draw(_ends) if action == "allow" else draw(st.one_of(_ends, st.just("*")))
    port = (
        draw(st.integers(1, 65535))
        if action == "allow"
        else draw(st.one_of(st.none(), st.integers(1, 65535)))
    )
    protocol = draw(st.sampled_from(["TCP", "UDP", "SCTP"])) if port is not None else None
    flags = (
        tuple(sorted(draw(st.sets(st.sampled_from(["rare", "broad:namespace", "entity:world"])))))
        if action == "accept" and draw(st.booleans())
        else None
    )
    return Decision(
        action, from_=src, to=dst, port=port, protocol=protocol, reason=reason, expires=expires,
        flags=flags,
    )


@given(st.lists(_decision(), max_size=6))
def test_dump_then_parse_gives_the_same_decisions(entries: list[Decision]) -> None:
    decisions = Decisions(tuple(entries))
    text = dump_decisions(decisions)
    assert parse_decisions(text) == decisions
    assert dump_decisions(parse_decisions(text)) == text
