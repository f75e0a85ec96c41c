"""The job state: edges merged across runs, stale edges, the namespace lifecycle, round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import flow_row, make_table

from recommender.aggregate.edges import aggregate_edges
from recommender.errors import ConfigError
from recommender.job.state import (
    STATE_FILES,
    LifecycleOptions,
    NamespaceState,
    State,
    merge_edges,
    update_lifecycle,
)

DAY = datetime(2026, 1, 5, 12, tzinfo=UTC)


def window(day: datetime, *edges: tuple[str, str, int]):
    rows = [
        flow_row(start_time=day, end_time=day, src_namespace="shop", src_workload=s,
                 dst_namespace="shop", dst_workload=d, dst_port=port)
        for s, d, port in edges
    ]
    return aggregate_edges(make_table(rows))


def pairs(table) -> set[tuple[str, str, int]]:
    return set(zip(table["src_id"].to_pylist(), table["dst_id"].to_pylist(),
                   table["dst_port"].to_pylist(), strict=True))


def roundtrip(state: State) -> State:
    files = state.to_files()
    return State.from_files(files.get)


def test_first_merge_takes_the_window():
    w = window(DAY, ("web", "db", 5432))
    m = merge_edges(State(), w, DAY, LifecycleOptions())
    assert pairs(m.active) == {("web", "db", 5432)}
    assert m.new_edges == 1 and m.stale.num_rows == 0 and m.forgotten == 0
    assert m.active.schema == w.edges.schema


def test_an_edge_that_leaves_the_window_keeps_its_rule_and_first_seen():
    opts = LifecycleOptions(retention=timedelta(days=30))
    first = window(DAY, ("web", "db", 5432), ("cron", "db", 5432))
    m1 = merge_edges(State(), first, DAY, opts)
    state = roundtrip(State(edges=m1.remembered, labels=m1.labels, run_at=DAY, runs=1))
    later = DAY + timedelta(days=10)
    m2 = merge_edges(state, window(later, ("web", "db", 5432)), later, opts)
    assert pairs(m2.active) == {("web", "db", 5432), ("cron", "db", 5432)}
    assert m2.new_edges == 0
    rows = {(r["src_id"]): r for r in m2.active.to_pylist()}
    assert rows["web"]["first_seen"] == DAY  # the earliest sighting is kept
    assert rows["web"]["last_seen"] == later
    assert rows["cron"]["last_seen"] == DAY
    # The cron workload is not in the window's labels: its labels come from the state.
    assert {"cron", "web", "db"} <= set(m2.labels["workload"].to_pylist())


def test_unseen_for_the_retention_period_is_stale_then_forgotten():
    opts = LifecycleOptions(retention=timedelta(days=30))
    m1 = merge_edges(State(), window(DAY, ("web", "db", 5432), ("cron", "db", 5432)), DAY, opts)
    state = State(edges=m1.remembered, labels=m1.labels, run_at=DAY, runs=1)
    t2 = DAY + timedelta(days=31)
    m2 = merge_edges(state, window(t2, ("web", "db", 5432)), t2, opts)
    assert pairs(m2.stale) == {("cron", "db", 5432)}
    assert m2.newly_stale == 1
    assert pairs(m2.active) == {("web", "db", 5432)}  # pruned: no rule any more
    assert pairs(m2.remembered) == {("web", "db", 5432), ("cron", "db", 5432)}
    assert "cron" not in m2.labels["workload"].to_pylist()
    # Kept when pruning is off, still reported.
    keep = merge_edges(state, window(t2, ("web", "db", 5432)), t2,
                       LifecycleOptions(retention=timedelta(days=30), prune_stale=False))
    assert pairs(keep.active) == {("web", "db", 5432), ("cron", "db", 5432)}
    assert keep.stale.num_rows == 1
    # Next run: still stale, no longer newly; after twice the retention, forgotten.
    state2 = State(edges=m2.remembered, labels=m2.labels, run_at=t2, runs=2)
    t3 = t2 + timedelta(days=1)
    m3 = merge_edges(state2, window(t3, ("web", "db", 5432)), t3, opts)
    assert m3.stale.num_rows == 1 and m3.newly_stale == 0
    t4 = DAY + timedelta(days=61)
    m4 = merge_edges(state2, window(t4, ("web", "db", 5432)), t4, opts)
    assert m4.forgotten == 1 and pairs(m4.remembered) == {("web", "db", 5432)}


def test_state_files_round_trip():
    m = merge_edges(State(), window(DAY, ("web", "db", 5432)), DAY, LifecycleOptions())
    ns = NamespaceState("shop", "stable", "abc", 3, 4, DAY, DAY, 5)
    state = State(edges=m.remembered, labels=m.labels, namespaces={"shop": ns}, run_at=DAY, runs=7)
    files = state.to_files()
    assert set(files) == set(STATE_FILES.values())
    back = State.from_files(files.get)
    assert back.runs == 7 and back.run_at == DAY
    assert back.namespaces == {"shop": ns}
    assert back.edges.equals(m.remembered)
    assert State.from_files(lambda name: None) == State()
    assert files == state.to_files()  # deterministic bytes


def test_a_state_of_another_layout_is_refused_with_the_fix():
    files = State(run_at=DAY, runs=1).to_files()
    bad = dict(files)
    bad[STATE_FILES["namespaces"]] = b"not parquet"
    with pytest.raises(ConfigError, match="delete the state files"):
        State.from_files(bad.get)


def test_lifecycle_learning_stabilising_stable_and_back():
    opts = LifecycleOptions(stable_runs=2)
    states, moves = update_lifecycle({}, {"shop": ("d1", 2, 3)}, DAY, opts)
    assert states["shop"].status == "learning"
    assert moves == [{"from": None, "namespace": "shop", "to": "learning"}]
    states, _ = update_lifecycle(states, {"shop": ("d1", 2, 3)}, DAY + timedelta(days=1), opts)
    assert (states["shop"].status, states["shop"].unchanged_runs) == ("stabilising", 1)
    states, moves = update_lifecycle(states, {"shop": ("d1", 2, 3)}, DAY + timedelta(days=2), opts)
    assert states["shop"].status == "stable"
    assert moves == [{"from": "stabilising", "namespace": "shop", "to": "stable"}]
    states, moves = update_lifecycle(states, {"shop": ("d2", 2, 4)}, DAY + timedelta(days=3), opts)
    assert states["shop"].status == "learning"
    assert states["shop"].changed_at == DAY + timedelta(days=3)
    assert states["shop"].first_run == DAY
    # A namespace without policies any more is reported as gone.
    _, moves = update_lifecycle(states, {}, DAY + timedelta(days=4), opts)
    assert moves == [{"from": "learning", "namespace": "shop", "to": None}]


def test_lifecycle_stable_after_a_period_without_change():
    opts = LifecycleOptions(stable_runs=100, stable_after=timedelta(days=7))
    states, _ = update_lifecycle({}, {"shop": ("d1", 1, 1)}, DAY, opts)
    states, _ = update_lifecycle(states, {"shop": ("d1", 1, 1)}, DAY + timedelta(days=6), opts)
    assert states["shop"].status == "stabilising"
    states, _ = update_lifecycle(states, {"shop": ("d1", 1, 1)}, DAY + timedelta(days=7), opts)
    assert states["shop"].status == "stable"


@pytest.mark.parametrize(
    "kwargs", [{"retention": timedelta(0)}, {"stable_runs": 0}, {"stable_after": timedelta(-1)}]
)
def test_lifecycle_options_are_checked(kwargs):
    with pytest.raises(ConfigError):
        LifecycleOptions(**kwargs)


def test_state_from_before_outcome_counts_still_merges():
    # State files written before edges counted connections by outcome have no 'established'
    # or 'failed' column: their edges merge as of unknown outcome (0 and 0).
    opts = LifecycleOptions(retention=timedelta(days=30))
    m1 = merge_edges(State(), window(DAY, ("cron", "db", 5432)), DAY, opts)
    old = m1.remembered.drop_columns(["established", "failed"])
    state = State(edges=old, labels=m1.labels, run_at=DAY, runs=1)
    later = DAY + timedelta(days=1)
    m2 = merge_edges(state, window(later, ("web", "db", 5432)), later, opts)
    assert pairs(m2.active) == {("web", "db", 5432), ("cron", "db", 5432)}
    rows = {r["src_id"]: r for r in m2.active.to_pylist()}
    assert (rows["cron"]["established"], rows["cron"]["failed"]) == (0, 0)
