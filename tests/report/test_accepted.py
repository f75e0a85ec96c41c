"""Accepted flagged rules survive the next run: ``accept`` entries of the decisions file take
a reviewed rule out of the verdict, and only while the rule stays as it was accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recommender import recommend
from recommender.report.model import report_markdown
from recommender.report.rule_entries import rule_decisions
from recommender.synthesis.decisions import Decision, Decisions, dump_decisions

SAMPLE = Path(__file__).resolve().parents[2] / "sample_flows" / "hubble.jsonl.gz"


@pytest.fixture(scope="module")
def first() -> Any:
    return recommend(SAMPLE)


def _rare(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["rules"] if "rare" in (r.get("flags") or [])]


def _reasons(report: dict[str, Any]) -> list[str]:
    return [r["text"] for r in report["verdict"]["reasons"]]


def _run(tmp_path: Path, entries: list[Decision]) -> Any:
    path = tmp_path / "decisions.yaml"
    path.write_text(dump_decisions(Decisions(tuple(entries))), encoding="utf-8")
    return recommend(SAMPLE, decisions=path)


def test_accepting_every_rare_rule_takes_it_out_of_the_verdict(first: Any, tmp_path: Path) -> None:
    rare = _rare(first.report)
    assert len(rare) == 2 and any("little evidence" in t for t in _reasons(first.report))
    accepts = [d for rule in rare for d in rule_decisions(rule, first.report, "accept")]
    # both rules (cart's egress, catalog's ingress) stand for the same edge
    assert set(accepts) == {Decision("accept", from_="shop/cart", to="shop/catalog", port=9000,
                                     protocol="TCP", flags=("rare",))}  # fmt: skip
    second = _run(tmp_path, sorted(set(accepts), key=str))
    report = second.report
    assert not any("little evidence" in t for t in _reasons(report))
    assert sorted(r["policy"] for r in report["rules"] if r.get("accepted")) == [
        "allow-cart", "allow-catalog"]  # fmt: skip
    assert all(f.get("accepted") for f in report["flagged"] if "rare" in f["flags"])
    items = [i for i in report["decisions"]["items"] if i["action"] == "accept"]
    assert [i["status"] for i in items] == ["applied"] and items[0]["edges"] == 2
    assert report["decisions"]["accepted_rules"] == 2
    # the other reasons stay, and the policies are the same bytes: accept changes no rule
    assert len(_reasons(report)) == len(_reasons(first.report)) - 1
    assert second.to_yaml() == first.to_yaml()
    markdown = report_markdown(report)
    assert "2 rules marked (accepted) were reviewed and kept" in markdown


def test_a_rule_with_a_flag_not_accepted_asks_again(first: Any, tmp_path: Path) -> None:
    entry = Decision("accept", from_="shop/cart", to="shop/catalog", port=9000, protocol="TCP",
                     flags=("broad:namespace",))  # fmt: skip
    report = _run(tmp_path, [entry]).report
    assert any("little evidence" in t for t in _reasons(report))
    assert not any(r.get("accepted") for r in report["rules"])
    # it covered the edges, but not the flag: applied, the rules still flagged, and why
    item = report["decisions"]["items"][0]
    assert item["status"] == "applied"
    assert item["note"] == "the rule now carries flags not accepted (rare); review it again"


def test_an_accept_covering_part_of_a_rule_does_not_accept_it(first: Any, tmp_path: Path) -> None:
    entry = Decision("accept", from_="shop/cart", to="shop/catalog", port=9001, protocol="TCP")
    report = _run(tmp_path, [entry]).report
    assert not any(r.get("accepted") for r in report["rules"])
    item = report["decisions"]["items"][0]
    assert item["status"] == "stale" and "no flagged rule" in item["note"]


def test_namespace_wildcards_and_any_flags_accept_too(first: Any, tmp_path: Path) -> None:
    entry = Decision("accept", from_="shop/*", to="shop/catalog")
    report = _run(tmp_path, [entry]).report
    assert not any("little evidence" in t for t in _reasons(report))


def test_an_expired_accept_is_ignored(first: Any, tmp_path: Path) -> None:
    from datetime import date

    entry = Decision("accept", from_="shop/cart", to="shop/catalog", expires=date(2000, 1, 1))
    report = _run(tmp_path, [entry]).report
    assert any("little evidence" in t for t in _reasons(report))
    assert report["decisions"]["items"][0]["status"] == "expired"
