"""report.html: self-contained, escaped, deterministic, and rendered by a real browser."""

from __future__ import annotations

import copy
import html
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from recommender import recommend
from recommender.report.html import GRAPH_MAX_NODES, report_html
from recommender.report.model import report_json
from recommender.report.text import flag_help

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

HOSTILE = "<script>alert(1)</script>\"onmouseover=alert(2) x='"
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source", "area", "base"}


@pytest.fixture(scope="module")
def rec() -> Any:
    return recommend(SAMPLE)


class _Checker(HTMLParser):
    """Collects tags and attributes; fails on unbalanced or mis-nested elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed: {checker.stack}"
    return checker


def _hostile_report(report: dict[str, Any]) -> dict[str, Any]:
    """The sample report with attacker-chosen names in every kind of place."""
    bad = copy.deepcopy(report)
    bad["summary"]["namespaces_in_scope"].append(HOSTILE)
    bad["summary"]["first_seen"] = HOSTILE
    bad["namespaces"][HOSTILE] = dict(next(iter(bad["namespaces"].values())))
    rule = dict(bad["rules"][0])
    rule.update(
        namespace=HOSTILE,
        workload=HOSTILE,
        policy=HOSTILE,
        peers=[f"{HOSTILE}/app={HOSTILE}", f"ipBlock {HOSTILE}"],
        ports=[HOSTILE],
        flags=[HOSTILE],
        first_seen=HOSTILE,
    )
    bad["rules"].append(rule)
    bad["flagged"].append({**rule})
    bad["selectors"].append(
        {
            "namespace": HOSTILE,
            "workload": HOSTILE,
            "selector": {HOSTILE: HOSTILE},
            "source": "fallback",
            "ambiguous": True,
        }
    )
    bad["selector_fallbacks"] = [bad["selectors"][-1]]
    bad["invalid_labels"] = [{"workload": HOSTILE, "key": HOSTILE, "value": HOSTILE}]
    bad["invalid_namespaces"] = [HOSTILE]
    bad["node_local"].append(
        {"workload": HOSTILE, "from": HOSTILE, "port": HOSTILE, "connections": 1, "why": HOSTILE}
    )
    bad["not_expressible"] = [
        {"source": HOSTILE, "destination": HOSTILE, "protocol": "ICMP", "connections": 1,
         "why": HOSTILE}
    ]  # fmt: skip
    bad["external_by_class"][HOSTILE] = [
        {"address": HOSTILE, "class": HOSTILE, "connections": 3, "direction": "egress",
         "dns_names": [HOSTILE], "from": HOSTILE, "port": HOSTILE}
    ]  # fmt: skip
    denied = dict(bad["denied"][0])
    denied.update(src_namespace=HOSTILE, src_id=HOSTILE, dst_kind="external", dst_id=HOSTILE)
    bad["denied"].append(denied)
    bad["excluded"] = [{**denied, "reason": HOSTILE}]
    bad["self_check"]["notes"].append(HOSTILE)
    bad["ingest"]["skipped"][HOSTILE] = 1
    bad["config"][HOSTILE] = [HOSTILE]
    return bad


def _hostile_edges(edges: pa.Table) -> pa.Table:
    for name in ("src_id", "dst_name", "src_namespace"):
        i = edges.column_names.index(name)
        values = [HOSTILE if v is not None else None for v in edges[name].to_pylist()]
        edges = edges.set_column(i, name, pa.array(values, pa.string()))
    return edges


@pytest.mark.parametrize("with_edges", [True, False])
def test_every_report_value_is_escaped(rec: Any, with_edges: bool) -> None:
    bad = _hostile_report(rec.report)
    page = report_html(bad, _hostile_edges(rec.edges) if with_edges else None)
    assert "<script" not in page.lower()
    assert '"onmouseover' not in page
    assert "x='" not in page
    assert html.escape(HOSTILE, quote=True) in page
    checker = _parse(page)
    assert "script" not in checker.tags
    assert not [name for name, _ in checker.attrs if name.startswith("on")]
    # the hostile text is there, as text
    assert any(HOSTILE in t for t in checker.text)


def test_control_characters_are_replaced(rec: Any) -> None:
    bad = copy.deepcopy(rec.report)
    bad["rules"][0]["workload"] = "a\x00b\x1bc\ud800d"
    page = report_html(bad)
    assert "\x00" not in page and "\x1b" not in page
    page.encode("utf-8")  # no lone surrogate left


def test_page_is_self_contained_and_well_formed(rec: Any) -> None:
    page = report_html(rec.report, rec.edges)
    checker = _parse(page)
    assert page.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert '<meta charset="utf-8">' in page
    for tag in ("script", "link", "img", "iframe", "object", "embed"):
        assert tag not in checker.tags
    for name, value in checker.attrs:
        assert name not in ("src", "srcset")
        if name == "href":
            assert value and value.startswith("#"), value
    assert "http://" not in page and "https://" not in page and "@import" not in page
    assert "url(" not in page.replace("url(#arrow)", "").replace("url(#arrow-denied)", "")
    for tag in ("h1", "h2", "h3", "table", "th", "svg", "title"):
        assert tag in checker.tags
    assert "Content-Security-Policy" in page


def test_deterministic(rec: Any) -> None:
    first = report_html(rec.report, rec.edges)
    assert first == report_html(copy.deepcopy(rec.report), rec.edges)
    # the same page from report.json as read back from disk
    assert report_html(json.loads(report_json(rec.report)), rec.edges) == first
    assert report_html(rec.report) == report_html(json.loads(report_json(rec.report)))
    # edge order does not matter
    reversed_edges = rec.edges.take(list(range(rec.edges.num_rows - 1, -1, -1)))
    assert report_html(rec.report, reversed_edges) == first


@pytest.mark.parametrize("with_edges", [True, False])
def test_sample_namespaces_rules_and_sections_appear(rec: Any, with_edges: bool) -> None:
    report = rec.report
    page = report_html(report, rec.edges if with_edges else None)
    esc = html.escape
    for ns in report["summary"]["namespaces_in_scope"]:
        assert f"<h3>Namespace {esc(ns)}</h3>" in page
        assert f"<td>{esc(ns)}</td>" in page
    for rule in report["rules"]:
        cells = "".join(
            [
                f"<td>{esc(rule['policy'])}</td>",
                f"<td>{esc(rule['workload'])}</td>",
                f"<td>{esc(rule['direction'])}</td>",
                f"<td>{'<br>'.join(esc(p) for p in rule['peers'])}</td>",
                f"<td>{'<br>'.join(esc(p) for p in rule['ports'])}</td>",
            ]
        )
        assert cells in page, rule
    for flagged in report["flagged"]:
        for flag in flagged["flags"]:  # each flag carries its meaning where it appears
            assert f'<span class="flag" title="{esc(flag_help(flag))}">{esc(flag)}</span>' in page
            assert flag_help(flag)
    for items in report["external_by_class"].values():
        for item in items:
            assert esc(item["address"]) in page
            for name in item.get("dns_names") or []:
                assert esc(name) in page
    svg = page[page.index("<svg") : page.index("</svg>")]
    for sel in report["selectors"]:
        assert f">{esc(sel['workload'])}</text>" in svg
    for denied in report["denied"][:5]:
        assert esc(denied["src_id"]) in svg
    for heading in (
        "Summary",
        "Self-check",
        "Input",
        "Communication graph",
        "Namespaces",
        "Rules and their evidence",
        "Flagged for review",
        "External addresses by class",
        "Denied flows (never allowed)",
    ):
        assert f">{heading}</h2>" in page
    assert "100.0% covered" in page


def test_graph_from_rules_resolves_every_sample_peer(rec: Any) -> None:
    page = report_html(rec.report)
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert ">[" not in svg  # an unresolved selector is drawn as "[selector]"
    assert "frontend \u2192 cart: TCP/8080" in svg
    assert "checkout \u2192 payments-api: TCP/8443" in svg


def test_graph_edges_have_port_tooltips(rec: Any) -> None:
    page = report_html(rec.report, rec.edges)
    assert "<title>shop/frontend" not in page  # nodes are titled by group: name
    assert "frontend \u2192 cart: TCP/8080" in page
    assert "DENIED debug-shell \u2192 172.18.0.2:" in page


def _synthetic_report(workloads: int) -> dict[str, Any]:
    rules = [
        {
            "namespace": f"ns{i % 7}",
            "policy": f"allow-w{i}",
            "workload": f"w{i}",
            "direction": "egress",
            "peers": [f"ns{(i + 1) % workloads % 7}/app=w{(i + 1) % workloads}"],
            "ports": ["TCP/8080"],
            "connections": i + 1,
            "first_seen": None,
            "last_seen": None,
            "windows": 1,
            "flags": [],
        }
        for i in range(workloads)
    ]
    selectors = [
        {"namespace": f"ns{i % 7}", "workload": f"w{i}", "selector": {"app": f"w{i}"},
         "source": "labels", "ambiguous": False}
        for i in range(workloads)
    ]  # fmt: skip
    return {"report_version": "1", "summary": {}, "rules": rules, "selectors": selectors}


def test_graph_resolves_peers_through_selectors() -> None:
    page = report_html(_synthetic_report(20))
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert svg.count("<rect ") == 20
    assert "w0 \u2192 w1: TCP/8080 (1 connections)" in svg


def test_graph_is_capped(rec: Any) -> None:
    page = report_html(_synthetic_report(GRAPH_MAX_NODES + 100))
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert svg.count("<rect ") == GRAPH_MAX_NODES
    assert f"the {GRAPH_MAX_NODES} busiest" in page
    _parse(page)
    small = report_html(rec.report, rec.edges)
    assert "busiest" not in small


def test_minimal_report_renders() -> None:
    page = report_html({"report_version": "1", "summary": {}})
    _parse(page)
    assert "No communication to draw." in page


# --- a real browser ---------------------------------------------------------------------------


def _chromium(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=2000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() or shutil.which("chromium")),
    reason="chromium is not installed (apt-get install chromium)",
)


@needs_chromium
def test_chromium_reports_console_errors(tmp_path: Path) -> None:
    """Control: the flags used below do surface a page's console errors."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>t</title></head>'
        "<body><script>console.error('control'); notDefined();</script></body></html>",
        encoding="utf-8",
    )
    result = _chromium(page.as_uri(), tmp_path, "--dump-dom")
    lines = _console_lines(result.stderr)
    assert any("control" in line for line in lines), result.stderr[-2000:]
    assert any("Uncaught" in line for line in lines)


@needs_chromium
@pytest.mark.parametrize("hostile", [False, True])
def test_chromium_renders_without_console_errors(rec: Any, tmp_path: Path, hostile: bool) -> None:
    report = _hostile_report(rec.report) if hostile else rec.report
    edges = _hostile_edges(rec.edges) if hostile else rec.edges
    page = tmp_path / "report.html"
    page.write_text(report_html(report, edges), encoding="utf-8")
    result = _chromium(page.as_uri(), tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "<title>Network policy recommendation</title>" in dom
    assert "<svg" in dom and "</svg>" in dom
    assert "Communication graph" in dom
    assert "<script" not in dom.lower()
    assert not _console_lines(result.stderr), _console_lines(result.stderr)

    shot = tmp_path / "report.png"
    result = _chromium(
        page.as_uri(), tmp_path, "--hide-scrollbars", "--window-size=1400,1600",
        f"--screenshot={shot}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    assert not _console_lines(result.stderr), _console_lines(result.stderr)


# --- held-out validation ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def held() -> Any:
    return recommend(SAMPLE, holdout=0.2)


def _holdout_section(page: str) -> str:
    start = page.index('<section id="holdout"')
    return page[start : page.index("</section>", start)]


def test_holdout_section(held: Any, rec: Any) -> None:
    h = held.report["holdout"]
    page = report_html(held.report, held.edges)
    _parse(page)
    assert '<a href="#holdout">Held-out validation</a>' in page
    section = _holdout_section(page)
    assert ">Held-out validation</h2>" in section
    split, learn, test = h["split_at"], h["learn"], h["test"]
    assert f'<time datetime="{html.escape(split)}">' in section
    assert f"({learn['connection_rows']:,} rows, {learn['rules']} rules)" in section
    assert f"({test['connection_rows']:,} rows; the latest 20% of the time span)" in section
    assert '<span class="badge ok">pass</span>' in section
    assert "<strong>0.00% false-deny rate</strong>" in section
    for name, window in (("learn (earlier)", learn), ("test (later)", test)):
        row = "".join(
            f'<td class="num">{window[k]:,}</td>'
            for k in ("connection_rows", "edges", "policies", "rules")
        )
        assert row in section, name
        assert f"<td>{name}</td>" in section
    assert (
        f'<td>0.00%</td><td class="num">0</td><td class="num">{h["observed_connections"]:,}</td>'
        in section
    )
    assert "<td>100.00%</td>" in section  # coverage
    assert (
        f"stability <strong>1.00</strong> ({h['churn']['unchanged']} rules unchanged, "
        "0 only in the later window, 0 only in the earlier one)" in section
    )
    assert "rules that differ" not in section
    # The section goes right after the self-check; no holdout, no section.
    assert page.index('id="self-check"') < page.index('id="holdout"') < page.index('id="input"')
    assert 'id="holdout"' not in report_html(rec.report)


def test_holdout_false_denies_and_churn_are_listed() -> None:
    late = recommend(SAMPLE, holdout=0.8)
    h = late.report["holdout"]
    assert h["false_deny_edges"] == 1 and h["churn"]["added"] == 2
    section = _holdout_section(report_html(late.report))
    assert '<span class="badge bad">check</span>' in section
    assert f"<strong>{h['false_deny_rate']:.2%} false-deny rate</strong>" in section
    e = h["false_denies"][0]
    assert (
        f"<td>{html.escape(e['source'])}</td><td>{html.escape(e['destination'])}</td>"
        f"<td>{e['protocol']}/{e['port']}</td>" in section
    )
    assert html.escape(e["reason"]) in section
    assert "rules that differ between the windows" in section
    for r in h["churn"]["added_rules"]:
        assert f"<td>later only</td><td>{html.escape(r['namespace'])}</td>" in section
        assert f"<td>{html.escape(r['policy'])}</td>" in section
    assert "<details>" not in section  # short lists are not folded


def test_holdout_values_are_escaped_and_long_lists_folded(held: Any) -> None:
    bad = copy.deepcopy(held.report)
    h = bad["holdout"]
    h["split_at"] = HOSTILE
    h["holdout"] = HOSTILE
    h["learn"]["first_seen"] = HOSTILE
    h["test"]["rules"] = HOSTILE
    h["false_deny_rate"] = HOSTILE
    h["churn"]["stability"] = HOSTILE
    h["false_denies"] = [
        {"source": HOSTILE, "destination": HOSTILE, "protocol": HOSTILE, "port": i,
         "connections": 1, "reason": HOSTILE}
        for i in range(30)
    ]  # fmt: skip
    h["false_deny_edges"] = 40
    h["churn"]["added_rules"] = [
        {"namespace": HOSTILE, "policy": HOSTILE, "direction": HOSTILE, "peers": [HOSTILE],
         "ports": [HOSTILE]}
    ]  # fmt: skip
    page = report_html(bad)
    section = _holdout_section(page)
    assert "<script" not in page.lower() and '"onmouseover' not in page and "x='" not in page
    assert html.escape(HOSTILE, quote=True) in section
    checker = _parse(page)
    assert "script" not in checker.tags
    assert not [name for name, _ in checker.attrs if name.startswith("on")]
    assert "<details><summary>Show 30 edges</summary>" in section
    assert "30 edges of the later window the learned policies deny (of 40)" in section


def test_a_graph_built_already_gives_the_same_page(rec: Any) -> None:
    """The pipeline hands its graph to report_html: the page is the same as when the page
    builds its own, with denied flows in the report (the graph is then built again) and
    without (the graph given is drawn)."""
    from recommender.analysis.graph import graph_from_edges

    tables = rec.tables
    assert tables.denied.num_rows  # the sample has denied flows
    graph = graph_from_edges(tables.edges, tables.denied, tables.workload_labels)
    assert report_html(rec.report, rec.edges, graph) == report_html(rec.report, rec.edges)
    none_denied = {**rec.report, "denied": []}
    alone = graph_from_edges(tables.edges, tables.denied.slice(0, 0), tables.workload_labels)
    page = report_html(none_denied, rec.edges, alone)
    assert page == report_html(none_denied, rec.edges)
    assert "<svg" in page
