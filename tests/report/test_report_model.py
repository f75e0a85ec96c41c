"""One report model, three renderings: the same sections in the same order, a verdict first,
grouped findings, no Python repr, times to the second, correct plurals."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, T0, flow_row, make_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import recommend
from recommender.cli import main
from recommender.report.html import report_html
from recommender.report.markdown import report_markdown
from recommender.report.model import report_json
from recommender.report.sections import report_sections
from recommender.report.text import duration, flag_help, plain, plural, when
from recommender.report.verdict import build_verdict

SAMPLE = ROOT / "sample_flows" / "flows.parquet"


@pytest.fixture(scope="module")
def rec() -> Any:
    return recommend(SAMPLE)


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.titles: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.ids.append(str(dict(attrs)["id"]))
        self._in_h2 = tag == "h2"
        if tag == "h2":
            self.titles.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.titles[-1] += data


def _forms(report: dict[str, Any]) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    md = report_markdown(report, graph_file="graph.svg")
    md_titles = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    parser = _Sections()
    parser.feed(report_html(report))
    as_json = json.loads(report_json(report))["sections"]
    assert parser.titles == [s["title"] for s in as_json]
    return md_titles, parser.ids, [(s["id"], s["title"]) for s in as_json]


def test_the_three_forms_have_the_same_sections_in_the_same_order(rec: Any) -> None:
    md_titles, html_ids, json_sections = _forms(rec.report)
    assert json_sections == report_sections(rec.report)
    assert md_titles == [t for _, t in json_sections]
    assert html_ids == [i for i, _ in json_sections]
    assert json_sections[0] == ("verdict", "Verdict")
    # the sections report.html lacked before issue 17
    assert {"anomalies", "granularity"} <= set(html_ids)


def test_sections_stay_equal_with_holdout_guardrails_decisions_and_compaction(
    tmp_path: Path,
) -> None:
    guardrails = tmp_path / "g.yaml"
    guardrails.write_text(
        "guardrails:\n- name: no-metadata\n  priority: 10\n  egress:\n  - action: deny\n"
        "    to: [{networks: [169.254.169.254/32]}]\n"
    )
    decisions = tmp_path / "d.yaml"
    decisions.write_text(
        "apiVersion: recommender.io/v1\nkind: Decisions\ndecisions:\n"
        "- action: exclude\n  namespace: monitoring\n"
    )
    rec = recommend(
        SAMPLE, holdout=0.2, guardrails=guardrails, decisions=decisions, compact_policies=True
    )
    md_titles, html_ids, json_sections = _forms(rec.report)
    assert md_titles == [t for _, t in json_sections]
    assert html_ids == [i for i, _ in json_sections]
    assert {"holdout", "guardrails", "decisions", "granularity"} <= set(html_ids)


def test_sample_report_md_is_short_and_the_scan_takes_one_row(rec: Any) -> None:
    md = report_markdown(rec.report, graph_file="graph.svg")
    assert len(md.splitlines()) < 150
    scanner = "shop/debug-shell"
    rows = [line for line in md.splitlines() if line.startswith("|") and scanner in line]
    # one row in Anomalies; the segments table names the pod as a member, not a scan
    scan_rows = [r for r in rows if "scan" in r]
    assert len(scan_rows) == 1, scan_rows
    assert "132" in scan_rows[0] and "11" in scan_rows[0]  # edges and distinct targets
    # the interesting denied edge is in the first rows of its table, not row 133
    denied = md[md.index("## Denied flows") :]
    assert "| shop/frontend | payments/ledger-db | TCP/5432 |" in denied.split("##")[1]


def test_no_python_repr_microseconds_or_bad_plurals(rec: Any) -> None:
    md = report_markdown(rec.report, graph_file="graph.svg")
    page = report_html(rec.report, rec.edges)
    for text in (md, page):
        assert "{'" not in text and "': '" not in text
        assert "| True |" not in text and "| False |" not in text
        assert not re.search(r"(?<![\d,])1 (policies|rules|edges|namespaces|workloads)\b", text)
    assert not re.search(r"\d\d:\d\d:\d\d\.\d{3}", md)
    visible = re.sub(r'datetime="[^"]*"', "", page)  # full precision kept only in attributes
    assert not re.search(r"\d\d:\d\d:\d\d\.\d{3}", visible)


def test_every_flag_shown_is_explained_next_to_it(rec: Any) -> None:
    md = report_markdown(rec.report)
    flags = {f for r in rec.report["rules"] for f in r["flags"]}
    assert flags  # the sample has rare and entity:kube-apiserver rules
    for flag in flags:
        assert flag_help(flag)
        assert f"`{flag}` {flag_help(flag)}" in md
    page = report_html(rec.report)
    assert 'title="' + flag_help("rare") + '"' in page


def test_the_sample_needs_review_first_and_says_why(rec: Any) -> None:
    verdict = rec.report["verdict"]
    assert verdict["verdict"] == "review first"
    texts = " ".join(r["text"] for r in verdict["reasons"])
    assert "less than a day" in texts and "little evidence" in texts
    ids = {i for i, _ in report_sections(rec.report)}
    assert all(r["section"] in ids for r in verdict["reasons"])  # each links to its evidence


def test_a_namespace_typo_is_not_ready_and_lists_what_was_seen() -> None:
    verdict = recommend(SAMPLE, namespaces=("shopp",)).report["verdict"]
    assert verdict["verdict"] == "not ready"
    reason = next(r for r in verdict["reasons"] if "shopp" in r["text"])
    assert reason["level"] == "not ready"
    assert "monitoring, payments, shop" in reason["text"]


def test_a_few_seconds_of_flows_are_not_ready(table_of: Any) -> None:
    rows = [
        flow_row(
            src_namespace="shop",
            src_workload="web",
            dst_namespace="shop",
            dst_workload="api",
            dst_port=8080,
            start_time=T0 + timedelta(seconds=s),
            end_time=T0 + timedelta(seconds=s),
        )
        for s in range(5)
    ] + [
        flow_row(
            src_namespace="shop",
            src_workload="web",
            dst_namespace="shop",
            dst_workload="db",
            dst_port=5432,
            verdict="denied",
        )
        for _ in range(2)
    ]
    report = recommend(make_table(rows)).report
    assert report["verdict"]["verdict"] == "not ready"
    assert any("under an hour" in r["text"] for r in report["verdict"]["reasons"])


def test_ready_when_nothing_needs_a_decision() -> None:
    report = {
        "summary": {
            "connection_rows": 9000,
            "edges": 3,
            "first_seen": "2026-01-01T00:00:00+00:00",
            "last_seen": "2026-01-08T00:00:00+00:00",
            "namespaces_in_scope": ["shop"],
            "namespaces_out_of_scope": [],
            "excluded_edges": 0,
        },
        "config": {"namespaces": ["shop"], "exclude_namespaces": []},
        "self_check": {"coverage": 1.0, "false_denies": 0, "denied_in_input_but_allowed": 0},
        "flagged": [],
    }
    assert build_verdict(report) == {"verdict": "ready", "reasons": []}
    report["self_check"]["false_denies"] = 1
    assert build_verdict(report)["verdict"] == "not ready"


@pytest.mark.parametrize(
    ("args", "verdict"),
    [([], "review first"), (["-n", "shopp"], "not ready")],
)
def test_the_cli_last_line_repeats_the_verdict(
    tmp_path: Path, capsys: Any, args: list[str], verdict: str
) -> None:
    assert main(["run", str(SAMPLE), "-o", str(tmp_path / "out"), *args]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"verdict: {verdict} (")
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.split("\n## ")[1].startswith("Verdict\n")
    assert f"**{verdict.capitalize()}.**" in md


def test_text_helpers() -> None:
    assert plural(1, "policy", "policies") == "1 policy"
    assert plural(2, "policy", "policies") == "2 policies"
    assert plural(1_000, "edge") == "1,000 edges"
    assert duration(5) == "5 seconds" and duration(3600) == "1 hour"
    assert when("2026-01-05T09:00:02.368767+00:00") == "2026-01-05 09:00:02Z"
    assert when(datetime(2026, 1, 5, 9, 0, 2, 5, tzinfo=UTC)) == "2026-01-05 09:00:02Z"
    assert plain({"app": "jaeger"}) == "app=jaeger" and plain(False) == "no"


def test_a_workload_seen_in_part_of_the_window_needs_review() -> None:
    rows = []
    for minute in range(0, 26 * 60, 30):  # a bit more than a day of web -> api
        t = T0 + timedelta(minutes=minute)
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload="web",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=8080,
                start_time=t,
                end_time=t,
            )
        )
    for minute in range(0, 60, 10):  # a new worker, only in the last hour
        t = T0 + timedelta(hours=25, minutes=minute)
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload="worker",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=8080,
                start_time=t,
                end_time=t,
            )
        )
    report = recommend(make_table(rows)).report
    assert [p["workload"] for p in report["partial_workloads"]] == ["shop/worker"]
    reasons = report["verdict"]["reasons"]
    assert report["verdict"]["verdict"] == "review first"
    assert any("shop/worker" in r["text"] and r["level"] == "review first" for r in reasons)
    assert not any("less than a day" in r["text"] for r in reasons)
    # the evidence the reason links to: the Rules section names the workload and its span
    rules_md = report_markdown(report).split("## Rules and their evidence")[1].split("\n## ")[0]
    assert "Seen in less than half of the window" in rules_md and "shop/worker (" in rules_md
    assert "shop/worker (" in report_html(report)


def test_a_scoped_run_is_not_blamed_for_denied_flows_in_other_namespaces() -> None:
    report = recommend(SAMPLE, namespaces=("payments",)).report
    check = report["self_check"]
    assert check["denied_in_input_but_allowed"] > 0  # the scanner in shop, out of scope here
    assert check["problems"] == []  # the flows it allows are in namespaces left alone
    assert report["verdict"]["verdict"] == "review first"


def test_a_time_filter_that_matches_nothing_is_not_ready_and_says_so() -> None:
    report = recommend(SAMPLE, since=datetime(2030, 1, 1, tzinfo=UTC)).report
    (reason,) = report["verdict"]["reasons"]
    assert reason["level"] == "not ready"
    assert "since 2030-01-01" in reason["text"] and "4,000 flow records" in reason["text"]


_OPTIONAL = (
    "self_check",
    "anomalies",
    "ingest",
    "segments",
    "external_by_class",
    "granularity",
    "compaction",
    "config",
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dropped=st.sets(st.sampled_from(_OPTIONAL)))
def test_any_mix_of_optional_parts_gives_equal_section_lists(rec: Any, dropped: set[str]) -> None:
    report = {k: v for k, v in rec.report.items() if k not in dropped}
    report["sections"] = [{"id": a, "title": t} for a, t in report_sections(report)]
    md_titles, html_ids, json_sections = _forms(report)
    assert md_titles == [t for _, t in json_sections]
    assert html_ids == [i for i, _ in json_sections]


def test_a_hostile_decision_reason_is_escaped_in_every_form(tmp_path: Path) -> None:
    from recommender.synthesis.decisions import Decision, Decisions

    hostile = "<script>alert(1)</script> | x"
    rec = recommend(
        SAMPLE, decisions=Decisions((Decision("exclude", namespace="monitoring", reason=hostile),))
    )
    page = report_html(rec.report)
    md = report_markdown(rec.report)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "<script>" not in md and "\\| x" in md
    assert json.loads(report_json(rec.report))["decisions"]["items"][0]["reason"] == hostile


def test_a_staged_rollout_that_would_break_traffic_comes_right_after_the_verdict(rec: Any) -> None:
    report = {k: v for k, v in rec.report.items() if k not in ("verdict", "sections")}
    line = "would break: shop/web -> shop/db TCP/5432, 37 connections since 2026-03-02 12:10:00"
    report["staged_verdicts"] = {"would_break": [{"line": line}]}
    verdict = build_verdict(report)
    assert verdict["verdict"] == "not ready" and verdict["reasons"][0]["section"] == "staged"
    report["verdict"] = verdict
    report["sections"] = [{"id": a, "title": t} for a, t in report_sections(report)]
    md_titles, html_ids, _ = _forms(report)
    assert html_ids[:3] == ["verdict", "staged", "summary"]
    assert md_titles[1] == "Staged policies would break wanted traffic"
    assert f"- {line}" in report_markdown(report)


# --- the report's faster parts equal the straightforward ones ---------------------------------


def _reference_partial_spans(edges: Any, scope: set[str]) -> dict[tuple[str, str], list[Any]]:
    """Each in-scope workload's earliest first and latest last time, row by row."""
    spans: dict[tuple[str, str], list[Any]] = {}
    for row in edges.to_pylist():
        for side in ("src", "dst"):
            if row[f"{side}_kind"] != "workload" or row[f"{side}_namespace"] not in scope:
                continue
            seen = spans.setdefault((row[f"{side}_namespace"], row[f"{side}_id"]),
                                    [row["first_seen"], row["last_seen"]])  # fmt: skip
            if row["first_seen"] is not None and (seen[0] is None or row["first_seen"] < seen[0]):
                seen[0] = row["first_seen"]
            if row["last_seen"] is not None and (seen[1] is None or row["last_seen"] > seen[1]):
                seen[1] = row["last_seen"]
    return spans


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ends=st.lists(
        st.tuples(st.sampled_from(["web", "api", "db"]), st.sampled_from(["shop", "ops"]),
                  st.integers(0, 20), st.integers(0, 20)),
        min_size=1, max_size=12,
    ),
    scope=st.sets(st.sampled_from(["shop", "ops", "other"])),
)  # fmt: skip
def test_partial_workloads_equal_a_row_by_row_reading(
    ends: list[tuple[str, str, int, int]], scope: set[str]
) -> None:
    from recommender.aggregate.edges import aggregate_edges
    from recommender.config import RecommendConfig
    from recommender.report.model import _partial_workloads

    rows = []
    for src, ns, start, length in ends:
        rows.append(flow_row(src_namespace=ns, src_workload=src, dst_namespace="shop",
                             dst_workload="db", start_time=T0 + timedelta(hours=start),
                             end_time=T0 + timedelta(hours=start + length)))  # fmt: skip
    rows.append(flow_row(src_namespace="edge", src_workload="lb", dst_namespace="edge",
                         dst_workload="gw", start_time=T0,
                         end_time=T0 + timedelta(hours=41)))  # a window of 41 hours; fmt: skip
    tables = aggregate_edges(make_table(rows).to_batches(), RecommendConfig())
    got = _partial_workloads(tables, sorted(scope))
    spans = _reference_partial_spans(tables.edges, scope)
    window = (tables.last_seen - tables.first_seen).total_seconds()
    want = [
        {"workload": f"{ns}/{wl}", "first_seen": a.isoformat(), "last_seen": b.isoformat(),
         "share": round((b - a).total_seconds() / window, 4)}
        for (ns, wl), (a, b) in sorted(spans.items())
        if a is not None and b is not None and (b - a).total_seconds() / window < 0.5
    ]  # fmt: skip
    assert got == want


def test_rule_records_are_asdict_with_iso_times(rec: Any) -> None:
    from dataclasses import asdict

    from recommender.report.model import _iso, _record

    for r in rec.findings.rules:
        assert _record(r) == {k: _iso(v) for k, v in asdict(r).items()}
    assert rec.report["rules"] == [_record(r) for r in rec.findings.rules]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text()
    | st.datetimes(timezones=st.just(UTC)) | st.sets(st.integers(), max_size=2),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    | st.dictionaries(st.integers() | st.booleans() | st.none() | st.floats(), inner,
                      max_size=3),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(value=_json_values)
def test_report_json_is_the_standard_librarys_indented_json(value: Any) -> None:
    # The C encoder re-indented by msgspec (report_json's path; NaN, infinities and lone
    # surrogates fall back to json.dumps itself).
    from recommender.report.model import _fast_indented_json

    try:
        expected = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    except TypeError:  # keys of mixed types cannot be sorted: the same error
        with pytest.raises(TypeError):
            _fast_indented_json(value)
        return
    assert _fast_indented_json(value) == expected


_finite_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text() | st.datetimes(timezones=st.just(UTC)),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    | st.dictionaries(st.integers(), inner, max_size=3),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(value=_finite_json_values)
def test_report_json_fast_path_needs_no_fallback(value: Any) -> None:
    # Finite numbers and well-formed text never reach the fallback (json.dumps's Python
    # writer): msgspec's indenting alone gives the standard library's bytes.
    from recommender.report import model

    def fallback(value: Any) -> str:
        raise AssertionError("fell back to the Python writer")

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(model, "_indented_json", fallback)
        got = model.report_json(value)
    want = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    assert got == want + "\n"


def test_records_of_any_field_kind_are_asdict_with_iso_times() -> None:
    from dataclasses import asdict, dataclass, field

    from recommender.report.model import _iso, _record

    class Text(str):
        pass

    @dataclass
    class Many:
        text: str = "a"
        sub: str = Text("b")
        flag: bool = True
        number: float = 1.5
        nothing: None = None
        when: datetime = datetime(2024, 5, 1, 10, tzinfo=UTC)
        texts: list[str] = field(default_factory=lambda: ["x", "y"])
        mixed: list[Any] = field(default_factory=lambda: ["x", 1, Text("z")])
        nested: list[Any] = field(default_factory=lambda: [["x"], {"k": [1]}])
        mapping: dict[str, Any] = field(default_factory=lambda: {"k": ["v"]})
        empty: list[str] = field(default_factory=list)

    @dataclass
    class One:
        only: list[str] = field(default_factory=lambda: ["x"])

    @dataclass
    class Nothing:
        pass

    for record in (Many(), One(), Nothing()):
        got = _record(record)
        assert got == {k: _iso(v) for k, v in asdict(record).items()}
        assert list(got) == list(asdict(record))
    many = _record(Many())
    assert many["texts"] is not Many().texts and type(many["sub"]) is Text
