"""The communication graph: exact nodes and edges, every output format read back, determinism,
hostile names, and community detection."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from conftest import T0, flow_row, make_table, minutes
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender import build_graph, propose_segments, write_graph
from recommender.cli import main
from recommender.errors import ConfigError
from recommender.report.graph_html import VENDORED
from recommender.report.graph_io import GRAPH_FORMATS, graph_dot
from recommender.report.graph_svg import render_svg

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"
HOSTILE = "<script>alert(1)</script>\"'&\\\n}]; x -> y"


def _known() -> Any:
    rows = [
        flow_row(src_namespace="shop", src_workload="frontend", src_workload_kind="Deployment",
                 dst_namespace="shop", dst_workload="cart", dst_workload_kind="Deployment",
                 dst_port=8080, connections=3, bytes=300, end_time=T0 + minutes(1)),
        flow_row(start_time=T0 + minutes(70), end_time=T0 + minutes(71),
                 src_namespace="shop", src_workload="frontend", src_workload_kind="Deployment",
                 dst_namespace="shop", dst_workload="cart", dst_workload_kind="Deployment",
                 dst_port=8080, connections=2, bytes=200),
        flow_row(src_namespace="shop", src_workload="cart", dst_kind="external",
                 dst_ip="203.0.113.9", dst_port=443, protocol="TCP", connections=1, bytes=10),
        flow_row(src_namespace="shop", src_workload="cart", dst_kind="external",
                 dst_ip="169.254.169.254", dst_port=80, verdict="denied", connections=4),
        flow_row(src_kind="host", src_ip="10.0.0.5", dst_namespace="shop",
                 dst_workload="cart", dst_port=8081, connections=6),
        flow_row(src_namespace="shop", src_workload="cart", dst_kind="cluster-entity",
                 dst_ip="10.96.0.1", dst_name="kube-apiserver", dst_port=6443),
        flow_row(src_namespace="shop", src_workload="cart", dst_kind="external",
                 dst_ip="100.64.1.1", dst_port=53, protocol="UDP"),
    ]  # fmt: skip
    return make_table(rows)


def test_exact_graph_of_a_known_flow_table() -> None:
    g = build_graph(_known())
    assert list(g.nodes) == [
        "entity:10.96.0.1",
        "external:100.64.1.1",
        "external:169.254.169.254",
        "external:203.0.113.9",
        "host:10.0.0.5",
        "workload:shop/cart",
        "workload:shop/frontend",
    ]
    assert g.nodes["workload:shop/cart"] == {
        "kind": "workload", "label": "cart", "group": "ns:shop", "namespace": "shop",
        "name": "cart", "workload_kind": "Deployment", "labels": {"app": "cart"},
    }  # fmt: skip
    assert g.nodes["external:169.254.169.254"]["address_class"] == "cloud-metadata"
    assert g.nodes["external:100.64.1.1"]["group"] == "external:shared"
    assert g.nodes["external:203.0.113.9"]["address_class"] == "documentation"
    assert g.nodes["host:10.0.0.5"]["group"] == "nodes"
    assert g.nodes["host:10.0.0.5"]["address_class"] == "private"
    assert g.nodes["entity:10.96.0.1"]["label"] == "kube-apiserver (10.96.0.1)"
    assert list(g.edges(keys=True)) == [
        ("host:10.0.0.5", "workload:shop/cart", "allowed TCP/8081"),
        ("workload:shop/cart", "entity:10.96.0.1", "allowed TCP/6443"),
        ("workload:shop/cart", "external:100.64.1.1", "allowed UDP/53"),
        ("workload:shop/cart", "external:169.254.169.254", "denied TCP/80"),
        ("workload:shop/cart", "external:203.0.113.9", "allowed TCP/443"),
        ("workload:shop/frontend", "workload:shop/cart", "allowed TCP/8080"),
    ]
    edge = g.edges["workload:shop/frontend", "workload:shop/cart", "allowed TCP/8080"]
    assert edge == {
        "verdict": "allowed", "protocol": "TCP", "port": 8080, "connections": 5, "bytes": 500,
        "rows": 2, "windows": 2, "first_seen": "2026-01-05T09:00:00+00:00",
        "last_seen": "2026-01-05T10:11:00+00:00",
    }  # fmt: skip
    denied = g.edges["workload:shop/cart", "external:169.254.169.254", "denied TCP/80"]
    assert denied["verdict"] == "denied" and denied["connections"] == 4


def test_external_class_nodes_and_namespace_filter() -> None:
    g = build_graph(_known(), external="class")
    assert "external-class:cloud-metadata" in g
    assert g.nodes["external-class:documentation"]["addresses"] == ["203.0.113.9"]
    flows = make_table([
        flow_row(src_namespace="a", src_workload="x", dst_namespace="b", dst_workload="y"),
        flow_row(src_namespace="c", src_workload="z", dst_namespace="c", dst_workload="w"),
    ])  # fmt: skip
    assert sorted(build_graph(flows, namespaces=["b"])) == ["workload:a/x", "workload:b/y"]
    assert sorted(build_graph(flows, exclude_namespaces=["c"])) == ["workload:a/x", "workload:b/y"]
    with pytest.raises(ConfigError):
        build_graph(flows, external="nope")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sample_graph() -> nx.MultiDiGraph:
    return build_graph(SAMPLE)


def test_every_format_reads_back(sample_graph: nx.MultiDiGraph, tmp_path: Path) -> None:
    g = sample_graph
    write_graph(g, tmp_path / "g.graphml")
    back = nx.read_graphml(tmp_path / "g.graphml", force_multigraph=True)
    assert sorted(back.nodes) == sorted(g.nodes)
    assert back.number_of_edges() == g.number_of_edges()
    assert json.loads(back.nodes["workload:shop/cart"]["labels"]) == g.nodes[
        "workload:shop/cart"
    ]["labels"]
    key = next(iter(g.edges(keys=True)))
    assert back.edges[key]["connections"] == g.edges[key]["connections"]

    write_graph(g, tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text())
    again = nx.MultiDiGraph(**data["graph"])
    again.add_nodes_from((n.pop("id"), n) for n in data["nodes"])
    for e in data["edges"]:
        again.add_edge(e.pop("source"), e.pop("target"), key=e.pop("key"), **e)
    assert nx.utils.graphs_equal(again, g)

    write_graph(g, tmp_path / "g.dot")
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph communication {") and dot.rstrip().endswith("}")
    assert dot.count(" -> ") == g.number_of_edges()

    write_graph(g, tmp_path / "g.svg")
    root = ET.parse(tmp_path / "g.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    rects = root.findall(".//{http://www.w3.org/2000/svg}rect")
    assert len(rects) == g.number_of_nodes()

    write_graph(g, tmp_path / "g.html")
    page = (tmp_path / "g.html").read_text()
    # no external resource: no src/href at all, and a CSP that allows nothing else
    assert not re.search(r"(?i)<[^>]+\s(src|href)\s*=", page), "external resource"
    assert "content=\"default-src 'none';" in page
    assert "data-graph" in page and 'type="application/json"' in page


def test_unknown_extension_is_a_clear_error(sample_graph: nx.MultiDiGraph, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown graph format '\.png'.*\.svg"):
        write_graph(sample_graph, tmp_path / "g.png")
    assert set(GRAPH_FORMATS) >= {".graphml", ".json", ".dot", ".svg", ".html"}


def test_same_bytes_twice(sample_graph: nx.MultiDiGraph, tmp_path: Path) -> None:
    again = build_graph(SAMPLE)
    for ext in sorted(GRAPH_FORMATS):
        a = write_graph(sample_graph, tmp_path / f"a{ext}").read_bytes()
        b = write_graph(again, tmp_path / f"b{ext}").read_bytes()
        assert a == b, ext


def _hostile_graph() -> nx.MultiDiGraph:
    flows = make_table([
        flow_row(src_namespace="shop", src_workload=HOSTILE, dst_namespace="shop",
                 dst_workload="cart", dst_port=80, src_labels={"a": HOSTILE}),
        flow_row(src_namespace="shop", src_workload="cart", dst_kind="cluster-entity",
                 dst_ip="10.96.0.1", dst_name=HOSTILE + "\x01", dst_port=1),
    ])  # fmt: skip
    return build_graph(flows)


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    g = _hostile_graph()
    svg = render_svg(g)
    ET.fromstring(svg)  # well-formed despite the markup, quotes and control characters
    assert "<script" not in svg
    write_graph(g, tmp_path / "g.html")
    page = (tmp_path / "g.html").read_text()
    # the data block, the vendored libraries and the page's own script
    assert page.count("<script") == 2 + len(VENDORED)
    assert "alert(1)</script>" not in page
    data = page.split('type="application/json">', 1)[1].split("</script>", 1)[0]
    assert any(n["label"] == HOSTILE for n in json.loads(data)["nodes"])
    dot = graph_dot(g)
    # every quoted string ends at an unescaped quote: strip escapes, then count statements
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', dot)
    assert "alert" not in stripped and stripped.count(" -> ") == g.number_of_edges()
    write_graph(g, tmp_path / "g.graphml")
    back = nx.read_graphml(tmp_path / "g.graphml", force_multigraph=True)
    assert f"workload:shop/{HOSTILE}" in back


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed")
def test_html_page_script_runs_under_its_csp(tmp_path: Path) -> None:
    page = write_graph(build_graph(SAMPLE), tmp_path / "g.html")
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
        f"{page.as_uri()}#node=workload:shop/frontend"],
        capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip
    assert 'data-ready="1"' in dom
    # the node named in the address is selected: its attributes and its edges are listed
    assert "<h2>frontend</h2>" in dom and "<dd>workload:shop/frontend</dd>" in dom
    assert 'class="rg-edges"' in dom and "<td>TCP/8080</td>" in dom


def _two_clusters() -> Any:
    rows = []
    for team in ("red", "blue"):
        members = [f"{team}{i}" for i in range(5)]
        for a in members:
            for b in members:
                if a < b:
                    rows.append(flow_row(src_namespace="apps", src_workload=a,
                                         dst_namespace="apps", dst_workload=b,
                                         dst_port=8080, connections=10))  # fmt: skip
    rows.append(flow_row(src_namespace="apps", src_workload="red0", dst_namespace="apps",
                         dst_workload="blue0", dst_port=9000))  # fmt: skip
    return make_table(rows)


@pytest.mark.parametrize("method", ["louvain", "greedy"])
def test_two_obvious_clusters(method: str) -> None:
    proposal = propose_segments(build_graph(_two_clusters()), method=method)  # type: ignore[arg-type]
    members = sorted(tuple(s.members) for s in proposal.segments)
    assert members == [
        tuple(f"workload:apps/blue{i}" for i in range(5)),
        tuple(f"workload:apps/red{i}" for i in range(5)),
    ]
    assert [s.name for s in proposal.segments] == ["apps", "apps-2"]
    assert proposal.modularity > 0.4
    (bridge,) = proposal.cross_segment
    assert (bridge.protocol, bridge.port, bridge.edges) == (
        "TCP", 9000, (("workload:apps/red0", "workload:apps/blue0"),)
    )
    red = next(s for s in proposal.segments if "workload:apps/red1" in s.members)
    assert red.cohesion["workload:apps/red1"] == 1.0
    assert red.cohesion["workload:apps/red0"] < 1.0
    assert red.binding_edges and all(e[2] == ("TCP/8080",) for e in red.binding_edges)
    assert proposal.labels["workload:apps/red3"] == {"segment": red.name}


def test_shared_services_are_set_apart() -> None:
    proposal = propose_segments(build_graph(SAMPLE))
    shared = [s for s in proposal.segments if s.shared]
    assert [s.members for s in shared] == [
        ("workload:kube-system/coredns", "workload:monitoring/prometheus")
    ]
    by_name = {s.name: set(s.members) for s in proposal.segments}
    assert {"workload:payments/payments-api", "workload:payments/ledger-db"} <= by_name["payments"]
    # a boundary around payments must let DNS out
    assert any(
        f.source_segment == "payments" and f.destination_segment == "shared-services"
        and (f.protocol, f.port) == ("UDP", 53)
        for f in proposal.cross_segment
    )  # fmt: skip
    assert proposal.to_dict()["segments"][0]["reason"]
    with pytest.raises(ConfigError):
        propose_segments(build_graph(SAMPLE), method="nope")  # type: ignore[arg-type]


def test_cli_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.json"
    assert main(["graph", str(SAMPLE), "-o", str(out), "-n", "payments", "--segments",
                 "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    data = json.loads(out.read_text())
    assert summary["nodes"] == len(data["nodes"]) and summary["segments"] >= 1
    assert all(
        "payments" in (e["source"] + e["target"]) for e in data["edges"]
    ), "-n keeps only edges touching the namespace"
    assert any("segment" in n for n in data["nodes"])
    assert main(["graph", str(SAMPLE), "-o", str(tmp_path / "g.png")]) == 2
    assert "unknown graph format" in capsys.readouterr().err


def test_report_embeds_the_graph_and_the_segments(tmp_path: Path) -> None:
    from recommender import recommend

    rec = recommend(SAMPLE)
    segments = rec.report["segments"]
    assert segments == propose_segments(build_graph(SAMPLE, namespaces=())).to_dict()
    rec.write(tmp_path / "out")
    svg = (tmp_path / "out" / "graph.svg").read_text()
    root = ET.fromstring(svg)
    assert len(root.findall(".//{http://www.w3.org/2000/svg}rect")) == 21
    assert "(segment payments)" in svg
    md = (tmp_path / "out" / "report.md").read_text()
    assert "](graph.svg)" in md and "## Proposed segments" in md
    page = (tmp_path / "out" / "report.html").read_text()
    assert ">Proposed segments</h2>" in page
    assert "payments-api (" in page  # a member with its cohesion


@settings(max_examples=500, deadline=None)
@given(micros=st.integers(-62_135_596_800_000_000 + 86_400_000_000, 253_402_300_799_999_999))
def test_iso_times_are_datetime_isoformat(micros: int) -> None:
    # The graph writes edge times by arithmetic; the straightforward way is datetime's.
    from datetime import UTC, datetime, timedelta

    from recommender.analysis.graph import _iso

    want = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).isoformat()
    assert _iso(micros) == want
    assert _iso(micros - micros % 1_000_000) == want.split(".")[0].removesuffix("+00:00") + (
        "+00:00"
    )


@pytest.mark.parametrize("kind", [nx.MultiDiGraph, nx.DiGraph, nx.Graph, nx.MultiGraph])
def test_edge_data_is_edges_with_data_in_order(kind: type) -> None:
    from recommender.analysis.graph import edge_data

    g = kind()
    for i, (a, b) in enumerate([("x", "y"), ("y", "x"), ("x", "y"), ("z", "z"), ("y", "w")]):
        g.add_edge(a, b, n=i)
    assert list(edge_data(g)) == list(g.edges(data=True))
    built = build_graph(SAMPLE)
    assert list(edge_data(built)) == list(built.edges(data=True))
