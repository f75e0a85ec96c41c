"""The project's flow generator (recommender.samples.generator) and the sample_flows/ files."""

from __future__ import annotations

import collections
import gc
import gzip
import importlib.util
import inspect
import ipaddress
import itertools
import json
import sys
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recommender.ingest.schema import FLOW_SCHEMA
from recommender.samples.generator import (
    DEFAULT_SCENARIO,
    Connection,
    expected_edges,
    generate_connections,
    write_calico_jsonl,
    write_canonical_csv,
    write_canonical_parquet,
    write_hubble_jsonl,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"


def _write_all(out: Path, n: int, seed: int) -> dict[str, bytes]:
    write_hubble_jsonl(generate_connections(connections=n, seed=seed), out / "h.jsonl.gz",
                       seed=seed)
    write_calico_jsonl(generate_connections(connections=n, seed=seed), out / "c.jsonl.gz")
    write_canonical_parquet(generate_connections(connections=n, seed=seed), out / "f.parquet")
    write_canonical_csv(generate_connections(connections=n, seed=seed), out / "f.csv")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _write_all(tmp_path / "a", 600, seed=3)
    b = _write_all(tmp_path / "b", 600, seed=3)
    assert a == b
    (tmp_path / "c").mkdir()
    c = _write_all(tmp_path / "c", 600, seed=4)
    assert c["h.jsonl.gz"] != a["h.jsonl.gz"]


def test_exact_count_time_order_and_indices() -> None:
    for n in (1, 7, 150, 2500):
        conns = list(generate_connections(connections=n, seed=1))
        assert len(conns) == n
        assert [c.index for c in conns] == list(range(1, n + 1))
        assert all(a.start_us <= b.start_us for a, b in itertools.pairwise(conns))


def test_generator_streams_with_bounded_memory() -> None:
    stream = generate_connections(connections=200_000, seed=0)
    assert inspect.isgenerator(stream)
    count = 0
    live = []
    for conn in stream:
        assert isinstance(conn, Connection)
        count += 1
        if count in (20_000, 200_000):
            gc.collect()
            live.append(len(gc.get_objects()))
    assert count == 200_000
    assert live[1] - live[0] < 2_000, live  # no per-connection state is kept
    tracemalloc.start()
    try:
        for _ in generate_connections(connections=20_000, seed=0):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_scenario_content() -> None:
    conns = list(generate_connections(seed=0))
    edges = collections.Counter((c.edge, c.verdict) for c in conns)
    assert edges[("cart-catalog-admin", "allowed")] == 2  # the rare edge
    assert edges[("frontend-ledger-denied", "denied")] == 4
    assert edges[("debug-shell-scan", "denied")] > 50
    assert {c.verdict for c in conns} == {"allowed", "denied"}
    # the rollout: Deployment pods change their names and pod-template-hash halfway
    rollout = DEFAULT_SCENARIO.rollout_us
    before = {c.src.pod.name for c in conns if c.src.pod and c.src.pod.workload == "frontend"
              and c.start_us < rollout}
    after = {c.src.pod.name for c in conns if c.src.pod and c.src.pod.workload == "frontend"
             and c.start_us >= rollout}
    assert len(before) == len(after) == 2 and not before & after
    redis = {c.dst.pod.name for c in conns if c.dst.pod and c.dst.pod.workload == "redis"}
    assert redis == {"redis-0"}  # StatefulSets keep their pods
    for c in conns:
        for end in (c.src, c.dst):
            if end.pod is not None:
                assert ipaddress.ip_address(end.ip) in ipaddress.ip_network("10.244.0.0/16")
            if end.kind == "external":
                assert not ipaddress.ip_address(end.ip).is_private
    # every allowed connection belongs to an expected edge, and every expected edge is seen
    expected = {(e.src, e.dst, e.protocol, e.port) for e in expected_edges()}

    def name(peer, side: str) -> str:
        if peer.pod is not None:
            return f"{peer.pod.namespace}/{peer.pod.workload}"
        if peer.kind == "external":
            return "world" if side == "src" else peer.ip
        return peer.name

    seen = {(name(c.src, "src"), name(c.dst, "dst"), c.protocol, c.dst_port)
            for c in conns if c.verdict == "allowed"}
    assert seen <= expected
    assert expected - seen == set()


def test_parquet_matches_flow_schema(tmp_path: Path) -> None:
    path = tmp_path / "flows.parquet"
    n = write_canonical_parquet(generate_connections(connections=3000, seed=2), path)
    schema = pq.read_schema(path)
    assert schema.equals(FLOW_SCHEMA)
    assert schema.metadata == FLOW_SCHEMA.metadata
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == n == 3000
    assert meta.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(path)
    assert table.column("connections").to_pylist() == [1] * n
    assert set(table.column("verdict").to_pylist()) == {"allowed", "denied"}


HUBBLE_TOP = {"flow", "node_name", "time"}
HUBBLE_FLOW = {"time", "verdict", "IP", "l4", "source", "destination", "Type", "node_name",
               "event_type"}


def test_hubble_lines_look_like_hubble(tmp_path: Path) -> None:
    path = tmp_path / "hubble.jsonl"
    n = write_hubble_jsonl(generate_connections(connections=1500, seed=0), path)
    lines = path.read_bytes().splitlines()
    assert len(lines) == n > 3 * 1500
    flows = [json.loads(line) for line in lines]
    times = [f["time"] for f in flows]
    assert times == sorted(times)
    points, verdicts, types, labels = (collections.Counter() for _ in range(4))
    for obj in flows:
        assert set(obj) == HUBBLE_TOP
        f = obj["flow"]
        assert set(f) >= HUBBLE_FLOW, set(f)
        assert f["time"] == obj["time"] and f["node_name"] == obj["node_name"]
        points[f.get("trace_observation_point")] += 1
        verdicts[f["verdict"]] += 1
        types[f["Type"]] += 1
        for ep in (f["source"], f["destination"]):
            labels.update(lab.split("=")[0] for lab in ep["labels"])
            if "pod_name" in ep:
                assert "k8s:io.cilium.k8s.policy.cluster" in labels
                assert not any("pod-template-hash" in lab for lab in ep["labels"])
        if f["verdict"] == "DROPPED":
            assert f["drop_reason_desc"] == "POLICY_DENIED"
        if f["Type"] == "L7":
            assert f["l7"]["type"] in ("REQUEST", "RESPONSE")
    assert {"TO_OVERLAY", "TO_ENDPOINT", "TO_STACK"} <= set(points)
    assert {"FORWARDED", "DROPPED"} <= set(verdicts)
    assert types["L7"] > 0
    for label in ("reserved:world", "reserved:host", "reserved:kube-apiserver",
                  "k8s:io.kubernetes.pod.namespace", "k8s:io.cilium.k8s.policy.serviceaccount"):
        assert labels[label] > 0, label
    replies = [f["flow"].get("is_reply") for f in flows]
    assert replies.count(True) > 0 and replies.count(False) > 0
    assert any("workloads" in f["flow"]["source"] for f in flows)
    assert any("uuid" not in f["flow"] for f in flows)  # the older agent's events


def test_calico_records_come_in_src_dst_pairs(tmp_path: Path) -> None:
    path = tmp_path / "calico.jsonl.gz"
    n = write_calico_jsonl(generate_connections(connections=2000, seed=0), path)
    records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert len(records) == n
    flows: dict[tuple, dict[str, int]] = collections.defaultdict(lambda: {"src": 0, "dst": 0})
    for r in records:
        assert r["source_ip"] is None and r["source_port"] is None and r["dest_ip"] is None
        assert r["end_time"] - r["start_time"] >= 300
        assert r["num_flows"] >= r["num_flows_started"]
        for side in ("source", "dest"):
            if r[f"{side}_type"] == "wep":
                assert r[f"{side}_name"] == "-"
                assert isinstance(r[f"{side}_labels"]["labels"], list)
            else:
                assert r[f"{side}_type"] == "net" and r[f"{side}_name_aggr"] in ("pub", "pvt")
        key = (r["start_time"], r["source_namespace"], r["source_name_aggr"],
               r["dest_namespace"], r["dest_name_aggr"], r["dest_port"], r["proto"])
        if r["source_type"] == "wep" and r["dest_type"] == "wep":
            flows[key][r["reporter"]] += r["num_flows"]
    assert flows
    for key, counts in flows.items():
        if key[4] == "debug-shell" or key[2] == "debug-shell":
            continue
        assert counts["src"] == counts["dst"], (key, counts)
    actions = collections.Counter((r["reporter"], r["action"]) for r in records)
    assert actions[("dst", "deny")] > 0 and actions[("src", "deny")] > 0
    dep = next(r for r in records if r["source_name_aggr"].startswith("frontend-"))
    assert dep["source_name_aggr"].endswith("-*")
    assert any(lab.startswith("pod-template-hash=") for lab in dep["source_labels"]["labels"])


def test_csv_is_readable_as_canonical(tmp_path: Path) -> None:
    from recommender import read_flows

    path = tmp_path / "flows.csv"
    write_canonical_csv(generate_connections(connections=300, seed=0), path)
    table = read_flows(path, "csv")
    assert table.num_rows == 300


def _load_make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_samples", module)
    spec.loader.exec_module(module)
    return module


def test_sample_flows_are_up_to_date(tmp_path: Path) -> None:
    make_samples = _load_make_samples()
    make_samples.make_samples(tmp_path)
    for name in make_samples.FILES:
        shipped, fresh = SAMPLES / name, tmp_path / name
        assert shipped.exists(), f"{shipped} missing: run python sample_flows/make_samples.py"
        if name.endswith(".gz"):
            # compare the content: compressed bytes may differ between zlib builds
            assert gzip.decompress(shipped.read_bytes()) == gzip.decompress(fresh.read_bytes()), (
                f"{shipped} is stale: run python sample_flows/make_samples.py")
        else:
            assert pq.read_table(shipped).equals(pq.read_table(fresh)), (
                f"{shipped} is stale: run python sample_flows/make_samples.py")
    total = sum((SAMPLES / name).stat().st_size for name in make_samples.FILES)
    assert total < 2_000_000


@pytest.mark.parametrize("n", [0, -5])
def test_no_connections(n: int, tmp_path: Path) -> None:
    assert list(generate_connections(connections=n)) == []
    assert write_canonical_parquet(generate_connections(connections=n), tmp_path / "e.parquet") == 0
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0
