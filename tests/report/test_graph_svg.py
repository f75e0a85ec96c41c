"""The static picture (``graph.svg`` beside report.md, and report.html's drawing) passes the
same test as the interactive page: no two node boxes overlap, labels fit their boxes, and
every box lies inside the drawing."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from _browser import overlaps
from conftest import flow_row, make_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import build_graph, recommend
from recommender.report.graph_svg import render_svg

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"
NS = "{http://www.w3.org/2000/svg}"
LONG = "otelcol-hubble-collector-with-a-rather-long-deployment-name-0123456789"


def _boxes(svg: str) -> tuple[list[dict[str, Any]], float, float]:
    root = ET.fromstring(svg)
    boxes = []
    for g in root.iter(f"{NS}g"):
        if g.get("class") != "n":
            continue
        rect, text = g.find(f"{NS}rect"), g.find(f"{NS}text")
        assert rect is not None and text is not None
        x, y = float(rect.get("x", 0)), float(rect.get("y", 0))
        w, h = float(rect.get("width", 0)), float(rect.get("height", 0))
        boxes.append({"id": g.get("data-n"), "label": text.text or "",
                      "x1": x, "y1": y, "x2": x + w, "y2": y + h})  # fmt: skip
    return boxes, float(root.get("width", 0)), float(root.get("height", 0))


def _busy() -> Any:
    rows = []
    for n in range(5):
        for w in range(25):
            rows.append(flow_row(src_namespace=f"ns-{n}", src_workload=LONG[: 20 + 2 * w],
                                 dst_namespace=f"ns-{(n + w) % 5}", dst_workload="api",
                                 dst_port=80 + w))  # fmt: skip
        rows.append(flow_row(src_namespace=f"ns-{n}", src_workload="api", dst_kind="external",
                             dst_ip=f"203.0.113.{n}", dst_port=443))  # fmt: skip
    return make_table(rows)


def _assert_clean(svg: str) -> list[dict[str, Any]]:
    boxes, width, height = _boxes(svg)
    assert boxes
    assert overlaps(boxes) == []
    for b in boxes:
        assert b["x1"] >= 0 and b["x2"] <= width and b["y1"] >= 0 and b["y2"] <= height, b
        # the label fits its box (7 px a character at 12 px, and the 8 px margin)
        assert 8 + 7 * len(b["label"]) <= b["x2"] - b["x1"], b
    return boxes


@pytest.mark.parametrize("which", ["sample", "busy"])
def test_no_two_node_boxes_overlap(which: str) -> None:
    g = build_graph(SAMPLE if which == "sample" else _busy())
    boxes = _assert_clean(render_svg(g))
    if which == "busy":
        labels = {b["label"] for b in boxes}
        assert LONG[:44] in labels  # 44 characters are not cut
        assert LONG[:47] + "\u2026" in labels  # longer ones end in an ellipsis


def test_the_picture_beside_report_md(tmp_path: Path) -> None:
    recommend(SAMPLE).write(tmp_path)
    assert "graph.svg" in (tmp_path / "report.md").read_text()
    boxes = _assert_clean((tmp_path / "graph.svg").read_text())
    labels = {b["label"] for b in boxes}
    assert {"frontend", "payments-api", "kube-apiserver (172.18.0.2)"} <= labels


_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=70)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    calls=st.lists(
        st.tuples(st.integers(0, 6), _NAMES, st.integers(0, 6), _NAMES, st.integers(1, 65535)),
        min_size=1,
        max_size=60,
    ),
    outside=st.lists(st.tuples(st.integers(0, 6), _NAMES, st.integers(0, 255)), max_size=20),
)
def test_no_overlap_for_any_graph(
    calls: list[tuple[int, str, int, str, int]], outside: list[tuple[int, str, int]]
) -> None:
    rows = [flow_row(src_namespace=f"ns-{a}", src_workload=w, dst_namespace=f"ns-{b}",
                     dst_workload=v, dst_port=port) for a, w, b, v, port in calls]  # fmt: skip
    rows += [flow_row(src_namespace=f"ns-{a}", src_workload=w, dst_kind="external",
                      dst_ip=f"198.51.100.{ip}", dst_port=443) for a, w, ip in outside]  # fmt: skip
    _assert_clean(render_svg(build_graph(make_table(rows))))
