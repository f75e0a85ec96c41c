"""The interactive graph page in a real browser at 1280x800: the layout library's drawing has
no two overlapping node boxes, nothing under the side panel, ports on hover, denied flows
dashed, and a click that lists the node's edges with ports and counts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from _browser import browser, needs_browser, overlaps, screenshot  # noqa: F401
from conftest import flow_row, make_table

from recommender import build_graph, write_graph

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"

#: Every drawn box in page coordinates: leaves (workloads, peers) and compound boxes (with
#: their labels), plus the drawing area and the side panel.
_BOXES = """() => {
  const cy = window.recommenderGraph, view = document.querySelector('.rg-view');
  const r = view.getBoundingClientRect();
  const box = n => { const b = n.renderedBoundingBox({includeLabels: true});
    return {id: n.id(), label: n.data('label'), parent: n.isParent(),
            x1: b.x1 + r.left, y1: b.y1 + r.top, x2: b.x2 + r.left, y2: b.y2 + r.top}; };
  const p = document.querySelector('.rg-panel').getBoundingClientRect();
  return {nodes: cy.nodes().map(box), view: {x1: r.left, y1: r.top, x2: r.right, y2: r.bottom},
          panel: {id: 'panel', x1: p.left, y1: p.top, x2: p.right, y2: p.bottom}};
}"""


def _many_namespaces() -> Any:
    """60 workloads in 6 namespaces, calls within and across them, outside peers of three
    address classes, node traffic and denied flows: a busier picture than the sample."""
    rows = []
    name = "service-with-a-long-name-{}".format
    for n in range(6):
        ns = f"team-{n}"
        for w in range(10):
            rows.append(flow_row(src_namespace=ns, src_workload=name(w), dst_namespace=ns,
                                 dst_workload=name((w + 1) % 10), dst_port=8000 + w,
                                 connections=w + 1))  # fmt: skip
        rows.append(flow_row(src_namespace=ns, src_workload=name(0),
                             dst_namespace=f"team-{(n + 1) % 6}", dst_workload=name(5),
                             dst_port=443, connections=7))  # fmt: skip
        rows.append(flow_row(src_namespace=ns, src_workload="service-with-a-long-name-1",
                             dst_kind="external", dst_ip=f"203.0.113.{n + 1}", dst_port=443))
        rows.append(flow_row(src_namespace=ns, src_workload="service-with-a-long-name-2",
                             dst_kind="external", dst_ip=f"10.1.0.{n + 1}", dst_port=5432))
        rows.append(flow_row(src_kind="host", src_ip=f"172.18.0.{n + 2}", dst_namespace=ns,
                             dst_workload="service-with-a-long-name-3", dst_port=8080))
        rows.append(flow_row(src_namespace=ns, src_workload="service-with-a-long-name-4",
                             dst_namespace=ns, dst_workload="service-with-a-long-name-9",
                             dst_port=22, verdict="denied"))  # fmt: skip
    return make_table(rows)


def _crowded() -> Any:
    """40 namespaces of 4 workloads, all calling one shared service: the layout crowds the
    boxes around it, and boxes it leaves overlapping must still be pulled apart."""
    rows = []
    for n in range(40):
        for w in range(4):
            rows.append(flow_row(src_namespace=f"ns-{n:02d}", src_workload=f"app-{w}",
                                 dst_namespace="core", dst_workload="gateway", dst_port=443))
            rows.append(flow_row(src_namespace=f"ns-{n:02d}", src_workload=f"app-{w}",
                                 dst_namespace=f"ns-{n:02d}", dst_workload=f"app-{(w + 1) % 4}",
                                 dst_port=8080))  # fmt: skip
    return make_table(rows)


def _open(browser: Any, page_file: Path) -> Any:  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    page.wait_for_selector("[data-graph][data-ready='1']", timeout=60_000)
    assert not errors, errors
    return page


def _assert_clean_layout(boxes: dict[str, Any]) -> None:
    leaves = [b for b in boxes["nodes"] if not b["parent"]]
    groups = [b for b in boxes["nodes"] if b["parent"]]
    assert leaves and groups
    assert overlaps(leaves) == []
    assert overlaps(groups) == []  # namespaces and address classes are not nested
    view = boxes["view"]
    for b in boxes["nodes"]:
        assert view["x1"] <= b["x1"] and b["x2"] <= view["x2"], b
        assert view["y1"] <= b["y1"] and b["y2"] <= view["y2"], b
    assert overlaps([*boxes["nodes"], boxes["panel"]]) == overlaps(boxes["nodes"])


@needs_browser
@pytest.mark.parametrize("graph", ["sample", "many", "crowded"])
def test_layout_has_no_overlap_and_nothing_under_the_panel(
    browser: Any, tmp_path: Path, graph: str  # noqa: F811
) -> None:
    g = build_graph({"sample": SAMPLE, "many": _many_namespaces(), "crowded": _crowded()}[graph])
    page = _open(browser, write_graph(g, tmp_path / "g.html"))
    boxes = page.evaluate(_BOXES)
    _assert_clean_layout(boxes)
    labels = {b["label"] for b in boxes["nodes"]}
    if graph == "sample":
        assert {"shop", "payments", "external: public", "nodes", "frontend"} <= labels
    elif graph == "many":
        assert {f"team-{n}" for n in range(6)} | {"external: private"} <= labels
        assert "service-with-a-long-name-9" in labels  # labels are not cut
    else:
        assert len(boxes["nodes"]) == 41 + 161
    screenshot(page, f"graph-{graph}.png", tmp_path)
    page.close()


@needs_browser
def test_hover_click_and_denied_style(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    page = _open(browser, write_graph(build_graph(SAMPLE), tmp_path / "g.html"))
    # denied flows are dashed red, allowed ones solid
    styles = page.evaluate(
        "() => window.recommenderGraph.edges().map(e => [e.hasClass('denied'),"
        " e.style('line-style')])"
    )
    assert {tuple(s) for s in styles} == {(True, "dashed"), (False, "solid")}
    # hovering an edge shows its ports and connections
    mid = page.evaluate(
        "() => { const cy = window.recommenderGraph;"
        " const e = cy.edges().filter(e => !e.hasClass('denied') && e.source().id() !== "
        "e.target().id()).sort((a, b) => b.renderedLength?.() - a.renderedLength?.())[0];"
        " const r = document.querySelector('.rg-view').getBoundingClientRect();"
        " const m = e.renderedMidpoint(); return {x: m.x + r.left, y: m.y + r.top}; }"
    )
    page.mouse.move(mid["x"], mid["y"])
    tip = page.locator(".rg-tip")
    tip.wait_for(state="visible", timeout=5_000)
    assert re.search(r"\u2192 .+: (TCP|UDP)/\d+.* \(\d[\d,]* connections?\)", tip.inner_text())
    # a click on frontend lists its edges with ports and counts
    at = page.evaluate(
        "() => { const cy = window.recommenderGraph;"
        " const n = cy.nodes().filter(n => n.data('label') === 'frontend')[0];"
        " const r = document.querySelector('.rg-view').getBoundingClientRect();"
        " const p = n.renderedPosition(); return {x: p.x + r.left, y: p.y + r.top}; }"
    )
    page.mouse.click(at["x"], at["y"])
    rows = page.locator(".rg-details table.rg-edges tbody tr")
    assert rows.count() >= 5
    texts = [rows.nth(i).inner_text() for i in range(rows.count())]
    assert any(re.search(r"\u2192\s+cart\s+TCP/\d+\s+\d+", t) for t in texts), texts
    assert page.locator(".rg-details h2").first.inner_text() == "frontend"
    screenshot(page, "graph-click.png", tmp_path)
    page.close()


def test_vendored_scripts_are_the_published_files_with_their_licences() -> None:
    import hashlib

    from recommender.report.graph_html import VENDORED, static_text

    static = ROOT / "recommender" / "report" / "static"
    for name, digest in VENDORED.items():
        assert hashlib.sha256((static / name).read_bytes()).hexdigest() == digest, name
        assert static_text(name)  # readable as package data
    for package in ("cytoscape", "cytoscape-fcose", "cose-base", "layout-base"):
        licence = (static / f"LICENSE.{package}").read_text()
        assert "Permission is hereby granted, free of charge" in licence, package
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"report/static/*"' in pyproject


def test_the_page_draws_the_busiest_nodes_of_a_big_graph(tmp_path: Path) -> None:
    import json

    from recommender.report.graph_html import HTML_MAX_NODES

    rows = [flow_row(src_namespace=f"ns-{i % 20}", src_workload=f"w{i}", dst_namespace="core",
                     dst_workload="api", dst_port=443, connections=1 + i % 7)
            for i in range(HTML_MAX_NODES + 50)]  # fmt: skip
    g = build_graph(make_table(rows))

    def drawn(max_nodes: int | None) -> tuple[int, str]:
        page = write_graph(g, tmp_path / "g.html", max_nodes=max_nodes).read_text()
        data = json.loads(page.split('type="application/json">', 1)[1].split("</script>", 1)[0])
        return len(data["nodes"]), page

    count, page = drawn(None)  # the default: the busiest HTML_MAX_NODES
    assert count == HTML_MAX_NODES and "the drawing shows the 1,000 busiest nodes" in page
    count, page = drawn(g.number_of_nodes())
    assert count == g.number_of_nodes() and "the drawing shows the" not in page
