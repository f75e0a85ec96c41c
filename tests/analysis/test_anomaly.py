"""Anomaly screening: a truth table of scans, sibling deviations and cluster outliers, normal
traffic (sample flows, real datasets) left alone, and ``trust_all_flows`` keeping them."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import T0, flow_row, make_table, minutes

from recommender import RecommendConfig, recommend
from recommender.aggregate.edges import aggregate_edges
from recommender.analysis.anomaly import screen_flows
from recommender.cli import main
from recommender.errors import ConfigError
from recommender.report.model import report_markdown

ROOT = Path(__file__).resolve().parents[2]


def conn(src: str, dst: str, port: int, *, n: int = 1, at: float = 0, pod: str | None = None,
         verdict: str = "allowed", proto: str = "TCP") -> dict[str, Any]:
    """One connection row ``ns/workload -> ns/workload`` (or ``-> ip``)."""
    sns, swl = src.split("/")
    row = flow_row(
        src_namespace=sns,
        src_workload=swl,
        src_pod=pod or f"{swl}-0",
        src_ip=f"10.0.{zlib.crc32((pod or swl).encode()) % 200}.{zlib.crc32(src.encode()) % 200}",
        protocol=proto,
        dst_port=port,
        connections=n,
        verdict=verdict,
        start_time=T0 + minutes(at),
        end_time=T0 + minutes(at),
    )
    if "/" in dst:
        dns, dwl = dst.split("/")
        row.update(dst_namespace=dns, dst_workload=dwl, dst_labels={"app": dwl})
    else:
        row.update(dst_kind="external", dst_ip=dst)
    return row


def normal() -> list[dict[str, Any]]:
    """A small shop: web talks to db and DNS from three replicas; prometheus scrapes all."""
    rows = []
    for pod in ("web-a", "web-b", "web-c"):
        rows += [conn("shop/web", "shop/db", 5432, n=20, at=t, pod=pod) for t in (0, 30, 60)]
        rows += [conn("shop/web", "kube-system/coredns", 53, n=9, at=t, pod=pod, proto="UDP")
                 for t in (0, 60)]
    for target in ("shop/web", "shop/db", "shop/cache", "kube-system/coredns", "shop/queue",
                   "shop/worker", "shop/api", "shop/auth", "shop/search", "shop/mail",
                   "shop/cart", "shop/ledger"):
        rows.append(conn("monitoring/prometheus", target, 9090, n=30, at=5))
    return rows


def scan(allowed_hits: int = 2) -> list[dict[str, Any]]:
    """shop/debug probes 15 targets in two minutes; ``allowed_hits`` of them get through."""
    rows = [conn("shop/debug", "kube-system/coredns", 53, n=40, at=t, proto="UDP")
            for t in (0, 90)]
    targets = [("shop/db", p) for p in (22, 80, 443, 3306, 5432, 6379, 8080)]
    targets += [("shop/web", p) for p in (22, 80, 443, 3306, 6379, 8080, 9090, 27017)]
    for k, (dst, port) in enumerate(targets):
        verdict = "allowed" if k < allowed_hits else "denied"
        rows.append(conn("shop/debug", dst, port, at=40 + k / 10, verdict=verdict))
    return rows


def rules_of(rec: Any, workload: str) -> set[tuple[str, str, str]]:
    return {
        (r.direction, ",".join(r.peers), ",".join(r.ports))
        for r in rec.findings.rules
        if r.workload == workload
    }


def test_normal_traffic_is_not_flagged() -> None:
    rec = recommend(make_table(normal()))
    assert rec.report["anomalies"]["flagged"] == 0
    assert rec.report["self_check"]["coverage"] == 1.0


def test_a_planted_scan_is_flagged_and_gets_no_rule() -> None:
    table = make_table(normal() + scan())
    rec = recommend(table)
    a = rec.report["anomalies"]
    assert a["by_rule"]["scan"] == 15 and a["allowed_edges"] == 2
    flagged = {(x["destination"], x["port"], x["verdict"], x["excluded"]) for x in a["items"]}
    assert ("shop/db", 22, "allowed", True) in flagged
    assert ("shop/db", 80, "allowed", True) in flagged
    assert ("shop/web", 8080, "denied", False) in flagged
    assert "probed 15 targets" in a["items"][0]["reason"]
    # One finding for the scanning source, whatever the number of edges.
    (finding,) = a["scans"]
    assert finding["source"] == "shop/debug" and finding["targets"] == 15
    assert (finding["refused"], finding["answered"], finding["excluded"]) == (13, 2, 2)
    assert finding["summary"].startswith("shop/debug probed 15 targets on 9 ports between")
    # The probes that got through have no rule; DNS (40 connections, all along) keeps its own.
    assert not any("TCP/22" in p or "TCP/80" in p for _, _, p in rules_of(rec, "debug"))
    assert any("UDP/53" in p for _, _, p in rules_of(rec, "debug"))
    assert rec.report["self_check"]["coverage"] == 1.0
    reasons = rec.tables.excluded.column("reason").to_pylist()
    assert reasons.count("anomaly:scan") == 2
    # trust_all_flows keeps them (still reported, not excluded).
    trusted = recommend(table, trust_all_flows=True)
    assert trusted.report["anomalies"]["flagged"] == 15
    assert trusted.report["anomalies"]["excluded_edges"] == 0
    assert any("TCP/22" in p for _, _, p in rules_of(trusted, "debug"))


def test_a_scan_needs_many_targets_mostly_refused_or_unseen() -> None:
    # A fan-out to many peers that all answered, many times (prometheus in normal()): no scan.
    fan = [conn("shop/probe", f"shop/svc-{k}", 8080, n=1, at=40 + k / 10) for k in range(15)]
    fan += [conn("shop/other", f"shop/svc-{k}", 8080, n=5, at=50) for k in range(15)]
    assert recommend(make_table(normal() + fan)).report["anomalies"]["flagged"] == 0
    # Fifteen single tries of ports no one else uses, but fewer than scan_min_failed refused:
    # nothing says they failed, so precision first: no scan.
    assert recommend(make_table(normal() + scan(allowed_hits=13))).report["anomalies"][
        "flagged"
    ] == 0
    # Mostly never seen before and enough refused: a scan even though most were allowed.
    assert recommend(make_table(normal() + scan(allowed_hits=9))).report["anomalies"][
        "scans"
    ][0]["source"] == "shop/debug"
    # Few targets: not a scan, under the default; flagged with a lower threshold.
    few = [conn("shop/x", "shop/db", p, verdict="denied") for p in (1, 2, 3, 4)]
    assert recommend(make_table(normal() + few)).report["anomalies"]["flagged"] == 0
    low = recommend(make_table(normal() + few), scan_min_targets=4)
    assert low.report["anomalies"]["by_rule"]["scan"] == 4


def _siblings(lonely_pod_window: tuple[float, float] = (0, 60)) -> list[dict[str, Any]]:
    rows = normal()
    start, end = lonely_pod_window
    rows += [conn("shop/web", "shop/vault", 8200, n=12, at=t, pod="web-c") for t in (start, end)]
    return rows


def test_a_replica_talking_to_a_peer_its_siblings_never_use_is_flagged() -> None:
    rec = recommend(make_table(_siblings()))
    a = rec.report["anomalies"]
    assert a["by_rule"]["sibling-deviation"] == 1
    item = a["items"][0]
    assert (item["source"], item["destination"], item["port"]) == ("shop/web", "shop/vault", 8200)
    assert item["excluded"] and "only pod web-c" in item["reason"] and "2 sibling" in item["reason"]
    assert not any("vault" in peers for _, peers, _ in rules_of(rec, "web"))
    trusted = recommend(make_table(_siblings()), trust_all_flows=True)
    assert any("vault" in peers for _, peers, _ in rules_of(trusted, "web"))


def test_sibling_rule_reads_files_again_for_its_suspects(tmp_path: Path) -> None:
    # From files the pipeline streams the rows; the rule reads them again for suspects only.
    path = tmp_path / "flows.parquet"
    pq.write_table(make_table(_siblings()), path)
    rec = recommend([path])
    assert rec.report["anomalies"]["by_rule"]["sibling-deviation"] == 1
    assert not any("vault" in peers for _, peers, _ in rules_of(rec, "web"))


def test_sibling_rule_needs_concurrent_siblings() -> None:
    # Only two pods of web: below sibling_min_pods = 3.
    rows = [r for r in _siblings() if r["src_pod"] != "web-b"]
    assert recommend(make_table(rows), sibling_min_pods=3).report["anomalies"]["flagged"] == 0
    # A rollout: the old pods stop at 60 min, the new one starts at 120 and talks to a new peer.
    rows = normal() + [
        conn("shop/web", "shop/db", 5432, n=20, at=t, pod="web-new") for t in (120, 150)
    ] + [conn("shop/web", "shop/vault", 8200, n=12, at=t, pod="web-new") for t in (120, 150)]
    assert recommend(make_table(rows)).report["anomalies"]["flagged"] == 0


def _cluster(rare: int, peer: str = "93.184.216.34", port: int = 4444) -> list[dict[str, Any]]:
    rows = []
    for api in ("api-1", "api-2", "api-3", "api-4"):
        rows += [conn(f"shop/{api}", "shop/db", 5432, n=50, at=0, pod=f"{api}-x"),
                 conn(f"shop/{api}", "kube-system/coredns", 53, n=20, at=0, pod=f"{api}-x",
                      proto="UDP"),
                 conn("shop/gateway", f"shop/{api}", 8080, n=40, at=0)]
    rows.append(conn("shop/api-3", peer, port, n=rare, at=30, pod="api-3-x"))
    return rows


def test_raw_ip_egress_breaking_its_clusters_pattern_is_flagged() -> None:
    rec = recommend(make_table(_cluster(rare=2)))
    a = rec.report["anomalies"]
    assert a["by_rule"] == {"scan": 0, "sibling-deviation": 0, "cluster-outlier": 1}
    item = a["items"][0]
    assert (item["source"], item["destination"]) == ("shop/api-3", "external:93.184.216.34")
    assert "behaves like 3 other workloads" in item["reason"]
    assert "chance 1/4 x prior 0.03 = 0.0075" in item["reason"]
    assert not any("93.184" in peers for _, peers, _ in rules_of(rec, "api-3"))
    # One connection is never significant; three (rare_connections) are a pattern of its own.
    for n in (1, 3):
        assert recommend(make_table(_cluster(rare=n))).report["anomalies"]["flagged"] == 0
    # An internal peer, a web port or a private address: nothing to weigh against, no flag.
    for peer, port in (("shop/secrets", 8200), ("93.184.216.34", 443), ("10.9.9.9", 4444)):
        rec = recommend(make_table(_cluster(rare=2, peer=peer, port=port)))
        assert rec.report["anomalies"]["flagged"] == 0, (peer, port)
    # A cluster too small to have a pattern.
    assert recommend(make_table(_cluster(rare=2)), outlier_min_cluster=5).report[
        "anomalies"
    ]["flagged"] == 0


def test_sample_flows_flag_only_the_denied_debug_scan() -> None:
    table = pq.read_table(ROOT / "sample_flows" / "flows.parquet")
    rec = recommend(table)
    a = rec.report["anomalies"]
    assert a["flagged"] == a["by_rule"]["scan"] > 100
    assert a["allowed_edges"] == 0 and a["excluded_edges"] == 0
    assert {x["source"] for x in a["items"]} == {"shop/debug-shell"}
    assert "## Anomalies (possible scanning or lateral movement)" in report_markdown(rec.report)


@pytest.mark.parametrize(
    "pattern",
    [
        "hubble-otel-testdata/*.json",
        "calico-enterprise-docs/*.jsonl",
        "cilium-starwars-demo/*.jsonl",
    ],
)
def test_real_datasets_are_not_flagged(shared: Path, pattern: str) -> None:
    files = sorted((shared / "datasets").glob(pattern))
    assert files
    rec = recommend(files)
    assert rec.report["anomalies"]["flagged"] == 0, rec.report["anomalies"]["items"][:3]
    for single in files:  # each capture alone too
        assert recommend([single]).report["anomalies"]["flagged"] == 0


def test_screen_flows_library_call() -> None:
    table = make_table(normal() + scan())
    tables = aggregate_edges(table)
    screening = screen_flows(tables, table)
    assert len(screening.excluded) == 2
    assert screening.tables.edges.num_rows == tables.edges.num_rows - 2
    assert screening.tables.excluded.num_rows == tables.excluded.num_rows + 2
    kept = screen_flows(tables, table, RecommendConfig(trust_all_flows=True))
    assert kept.tables is tables and kept.trusted and not kept.excluded


def test_cli_trust_all_flows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = tmp_path / "flows.parquet"
    pq.write_table(make_table(normal() + scan()), flows)
    assert main([str(flows), "-o", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "15 edges look like scanning or lateral movement (2 of them allowed in the input: " \
           "left out)" in out
    default = (tmp_path / "a" / "shop" / "allow-debug.yaml").read_text()
    assert main([str(flows), "-o", str(tmp_path / "b"), "--trust-all-flows"]) == 0
    assert "kept (--trust-all-flows)" in capsys.readouterr().out
    trusted = (tmp_path / "b" / "shop" / "allow-debug.yaml").read_text()
    assert "port: 22" in trusted and "port: 22" not in default
    config = tmp_path / "c.yaml"
    config.write_text("trust_all_flows: true\nscan_min_targets: 10\n")
    assert main([str(flows), "-o", str(tmp_path / "c"), "-c", str(config)]) == 0
    capsys.readouterr()
    assert (tmp_path / "c" / "shop" / "allow-debug.yaml").read_text() == trusted


@pytest.mark.parametrize(
    "options",
    [
        {"scan_denied_share": 0},
        {"scan_denied_share": 1.5},
        {"cluster_distance": 1},
        {"scan_min_targets": -1},
        {"trust_all_flows": "yes"},
        {"compaction_budget": 1.5},
    ],
)
def test_thresholds_are_validated(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RecommendConfig(**options)
