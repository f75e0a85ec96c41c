"""The vectorised canonical generator (recommender.samples.bulk): bytes, schema, the scenario's
edges, and what `recommend` makes of its rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recommender import recommend
from recommender.ingest.schema import FLOW_SCHEMA
from recommender.samples.bulk import bulk_flow_batches, write_bulk_parquet
from recommender.samples.generator import (
    expected_edges,
    generate_connections,
    write_canonical_parquet,
)

N = 6000
#: More replies than the default, so that a small input has both kinds.
REPLIES = {"reply_fraction": 0.02, "unflagged_reply_fraction": 0.01}


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bulk") / "flows.parquet"
    assert write_bulk_parquet(path, N, seed=5, **REPLIES) == N
    return path


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path: Path, bulk: Path) -> None:
    again = tmp_path / "again.parquet"
    write_bulk_parquet(again, N, seed=5, **REPLIES)
    assert again.read_bytes() == bulk.read_bytes()
    other = tmp_path / "other.parquet"
    write_bulk_parquet(other, N, seed=6, **REPLIES)
    assert pq.read_table(other).column("src_port") != pq.read_table(bulk).column("src_port")


def test_schema_count_order_and_row_numbers(bulk: Path) -> None:
    schema = pq.read_schema(bulk)
    assert schema.equals(FLOW_SCHEMA)
    assert schema.metadata == FLOW_SCHEMA.metadata
    table = pq.read_table(bulk)
    assert table.num_rows == N
    assert table.column("source_row").to_pylist() == list(range(1, N + 1))
    start = table.column("start_time").cast(pa.int64()).to_numpy()
    assert (np.diff(start) >= 0).all()
    assert (table.column("end_time").cast(pa.int64()).to_numpy() >= start).all()
    # several hourly windows, distinct ephemeral source ports on forward rows
    assert len(np.unique(start // 3_600_000_000)) >= 3
    forward = table.filter(pc.equal(table.column("is_reply"), False))
    sports = forward.column("src_port").to_numpy()
    assert sports.min() >= 32768 and len(np.unique(sports)) > forward.num_rows // 2
    for name in ("src_kind", "dst_kind", "protocol", "verdict", "source_format"):
        assert table.column(name).null_count == 0


@pytest.mark.parametrize("n", [1, 7, 500, 2345])
def test_exact_count_whatever_the_batch_size(n: int) -> None:
    batches = list(bulk_flow_batches(n, seed=1, batch_rows=300))
    assert sum(b.num_rows for b in batches) == n
    table = pa.Table.from_batches(batches)
    assert table.column("source_row").to_pylist() == list(range(1, n + 1))
    start = table.column("start_time").cast(pa.int64()).to_numpy()
    assert (np.diff(start) >= 0).all()


def test_rows_are_the_scenarios_edges_replies_and_denied_attempts(bulk: Path) -> None:
    rows = pq.read_table(bulk).to_pylist()

    def name(r: dict, side: str) -> str:
        if r[f"{side}_kind"] == "workload":
            return f"{r[f'{side}_namespace']}/{r[f'{side}_workload']}"
        if r[f"{side}_kind"] == "external":
            return "world" if side == "src" else r[f"{side}_ip"]
        return str(r[f"{side}_name"])

    forward = {(name(r, "src"), name(r, "dst"), r["protocol"], r["dst_port"])
               for r in rows if r["verdict"] == "allowed" and r["is_reply"] is False}
    assert forward == {(e.src, e.dst, e.protocol, e.port) for e in expected_edges()}
    replies = [r for r in rows if r["is_reply"] is not False]
    assert {r["is_reply"] for r in replies} == {True, None}
    for r in replies:  # server port back to the client's ephemeral port
        assert r["src_port"] < 32768 <= r["dst_port"] and r["verdict"] == "allowed"
    denied = [r for r in rows if r["verdict"] == "denied"]
    assert {(name(r, "src"), r["drop_reason"]) for r in denied} == {
        ("shop/frontend", "POLICY_DENIED"), ("shop/debug-shell", "POLICY_DENIED")}
    assert {r["l7_protocol"] for r in rows} == {None, "http", "dns"}


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*.yaml"))}


def test_recommend_gives_the_scalar_generators_policies(tmp_path: Path, bulk: Path) -> None:
    scalar = tmp_path / "scalar.parquet"
    write_canonical_parquet(generate_connections(connections=N, seed=5), scalar)
    ours, theirs = recommend(bulk), recommend(scalar)
    ours.write(tmp_path / "bulk")
    theirs.write(tmp_path / "scalar")
    # The same cluster and edges: the same policy files, byte for byte.
    assert _tree(tmp_path / "bulk") == _tree(tmp_path / "scalar")
    selected = {p.namespace for p in ours.policy_set.policies}
    assert selected == {"shop", "payments", "monitoring"}  # kube-system: excluded by default
    names = {(p.namespace, p.name) for p in ours.policy_set.policies}
    assert names == {("monitoring", "allow-prometheus"), ("payments", "allow-ledger-db"),
                     ("payments", "allow-payments-api"), ("shop", "allow-cart"),
                     ("shop", "allow-catalog"), ("shop", "allow-checkout"),
                     ("shop", "allow-frontend"), ("shop", "allow-redis")} | {
                     (ns, "default-deny") for ns in selected}
    # no rule for a reply's ephemeral port: replies and denied attempts are reported instead
    ports = [s for p in ours.policy_set.policies for r in p.rules for s in r.ports]
    assert ports and all(s.port is not None and s.port < 32768 for s in ports)
    assert pc.max(ours.edges.column("dst_port")).as_py() < 32768
    reasons = set(ours.tables.excluded.column("reason").to_pylist())
    assert reasons == {"reply", "suspected-reply"}
    denied = {(r["src_id"], r["dst_id"], r["dst_port"]) for r in ours.tables.denied.to_pylist()}
    assert ("frontend", "ledger-db", 5432) in denied
    allowed = {(r["src_id"], r["dst_id"]) for r in ours.edges.to_pylist()}
    assert ("frontend", "ledger-db") not in allowed
    assert not any("debug-shell" in (s, d) for s, d in allowed)
