"""Held-out validation: would policies learned from the past have let the future through?

A recommendation is learned from a time window and applied to the traffic that follows. This
module measures that directly, by **time** (never a random row split: a random split leaks
every edge into both halves and hides exactly the failures that matter):

* :func:`split_flows` splits a flow table at a time: rows starting before it learn, rows
  starting at or after it test. ``holdout=0.2`` puts the split at 80 % of the time span (by
  ``start_time``), so the latest 20 % of the span is the test window;
* :func:`holdout_report` recommends on the learning window, replays the test window against
  those policies (:func:`~recommender.evaluation.replay.replay`), and recommends on the test window
  too to measure the **churn** of rules between the windows.

``recommend(flows, holdout=0.2)`` (and ``recommend run --holdout 0.2``) adds the result to the
report under ``holdout``; the policies themselves are still learned from all flows. See
``docs/validation.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..aggregate.edges import EdgeTables, aggregate_edges
from ..config import RecommendConfig, _parse_time
from ..errors import ConfigError
from ..policy.model import PolicySet
from ..synthesis.synthesizer import synthesize
from .diff import compare_rules, rule_dict
from .replay import replay

__all__ = ["churn", "check_options", "holdout_report", "resolve_split", "split_flows"]

#: Default share of the time span held out when only ``holdout_report(flows)`` is asked.
DEFAULT_HOLDOUT: Final = 0.2
#: Most edges and rules listed per list in the result.
_MAX_LISTED: Final = 200


def _as_time(value: datetime | str | None) -> datetime | None:
    parsed = _parse_time(value, "split_at")
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _check_holdout(holdout: float | None) -> None:
    if holdout is None:
        return
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 < holdout < 1:
        raise ConfigError(
            f"holdout must be a fraction between 0 and 1 (exclusive), not {holdout!r}."
        )


def check_options(holdout: float | None, split_at: datetime | str | None) -> datetime | None:
    """Validate the options before any work: ``holdout`` in (0, 1), ``split_at`` a time, not
    both. Returns ``split_at`` as an aware datetime (None when not given).

    Raises
    ------
    ConfigError
        On an invalid or conflicting option.
    """
    _check_holdout(holdout)
    when = _as_time(split_at)
    if holdout is not None and when is not None:
        raise ConfigError("give either holdout or split_at, not both.")
    return when


def _span(table: pa.Table) -> tuple[datetime, datetime]:
    if table.num_rows == 0:
        raise ConfigError("cannot split an empty flow table (no flows in the time window).")
    bounds = pc.min_max(table["start_time"]).as_py()
    first, last = bounds["min"], bounds["max"]
    if first is None or last is None:
        raise ConfigError("cannot split: no flow has a start_time.")
    return first, last


def resolve_split(
    table: pa.Table,
    *,
    holdout: float | None = None,
    split_at: datetime | str | None = None,
) -> datetime:
    """The split time for ``table``: ``split_at`` itself, or the point ``1 - holdout`` of the way
    from the first to the last ``start_time`` (rounded down to the microsecond).

    Raises
    ------
    ConfigError
        If both or neither option is given, ``holdout`` is not in (0, 1), ``split_at`` is not
        after the first start time or is after the last one (either window would be empty),
        or every row starts at the same time.
    """
    when = check_options(holdout, split_at)
    if holdout is None and when is None:
        raise ConfigError("give either holdout or split_at.")
    first, last = _span(table)
    return _resolve(first, last, holdout, when)


def _resolve(
    first: datetime, last: datetime, holdout: float | None, when: datetime | None
) -> datetime:
    if when is not None:
        if not first < when <= last:
            raise ConfigError(
                f"split_at {when.isoformat()} is outside the flows' span: it must be after the "
                f"first start time {first.isoformat()} and at or before the last "
                f"{last.isoformat()}."
            )
        return when
    assert holdout is not None
    span = last - first
    if span <= timedelta(0):
        raise ConfigError("cannot split by time: every flow starts at the same time.")
    learn_us = int((span // timedelta(microseconds=1)) * (1.0 - float(holdout)))
    return first + timedelta(microseconds=max(learn_us, 1))


def split_flows(
    table: pa.Table,
    *,
    holdout: float | None = None,
    split_at: datetime | str | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Split a canonical flow table by time into (learn, test).

    Parameters
    ----------
    table : pyarrow.Table
        Canonical flows.
    holdout : float, optional
        Share of the time span (first to last ``start_time``) to test on: ``0.2`` learns on the
        earliest 80 % of the span and tests on the latest 20 %. Shares of time, not of rows.
    split_at : datetime or ISO 8601 str, optional
        The split time itself (naive times are UTC). Give exactly one of the two.

    Returns
    -------
    (pyarrow.Table, pyarrow.Table)
        Rows with ``start_time`` before the split, and rows at or after it; row order and
        schema metadata are kept.

    Raises
    ------
    ConfigError
        See :func:`resolve_split`.

    Examples
    --------
    >>> learn, test = split_flows(table, holdout=0.25)                   # doctest: +SKIP
    """
    when = resolve_split(table, holdout=holdout, split_at=split_at)
    return _split_at(table, when)


def _split_at(table: pa.Table, when: datetime) -> tuple[pa.Table, pa.Table]:
    start = table["start_time"]
    scalar = pa.scalar(when, type=start.type)
    learn = pc.fill_null(pc.less(start, scalar), False)
    test = pc.fill_null(pc.greater_equal(start, scalar), False)
    return table.filter(learn), table.filter(test)


def _in_window(table: pa.Table, config: RecommendConfig) -> pa.Table:
    """The rows in the configuration's [since, until) window."""
    start = table["start_time"]
    mask = None
    if config.since is not None:
        mask = pc.greater_equal(start, pa.scalar(config.since, type=start.type))
    if config.until is not None:
        upper = pc.less(start, pa.scalar(config.until, type=start.type))
        mask = upper if mask is None else pc.and_(mask, upper)
    return table if mask is None else table.filter(pc.fill_null(mask, False))


def _window(tables: EdgeTables, policies: PolicySet, rules: int) -> dict[str, Any]:
    return {
        "connection_rows": tables.rows_used,
        "edges": tables.edges.num_rows,
        "first_seen": tables.first_seen.isoformat() if tables.first_seen else None,
        "last_seen": tables.last_seen.isoformat() if tables.last_seen else None,
        "policies": len(policies),
        "rules": rules,
    }


def _window_tables(
    flows: pa.Table | str | os.PathLike[str],
    config: RecommendConfig,
    holdout: float | None,
    split_at: datetime | str | None,
) -> tuple[EdgeTables, EdgeTables, datetime]:
    """The edge tables of the learning and the test window, and the split time."""
    if isinstance(flows, pa.Table):
        table = _in_window(flows, config)
        when = resolve_split(table, holdout=holdout, split_at=split_at)
        learn, test = _split_at(table, when)
        return aggregate_edges(learn, config), aggregate_edges(test, config), when
    path = Path(flows)
    chosen = check_options(holdout, split_at)
    first, last = _parquet_span(path, config)
    when = _resolve(first, last, holdout, chosen)
    learn_tables = aggregate_edges(_parquet_part(path, when, later=False), config)
    test_tables = aggregate_edges(_parquet_part(path, when, later=True), config)
    return learn_tables, test_tables, when


def churn(learned: PolicySet, later: PolicySet) -> dict[str, Any]:
    """Rule-by-rule churn from ``learned`` to ``later`` (rules as
    :func:`~recommender.evaluation.diff.rule_key`): ``added`` (only in ``later``), ``removed`` (only
    in ``learned``), ``unchanged`` and ``stability`` = unchanged / union (1.0 when both are empty),
    with the added and removed rules listed."""
    added, removed, unchanged = compare_rules(learned, later)
    union = len(added) + len(removed) + len(unchanged)
    return {
        "added": len(added),
        "added_rules": [rule_dict(k) for k in added[:_MAX_LISTED]],
        "removed": len(removed),
        "removed_rules": [rule_dict(k) for k in removed[:_MAX_LISTED]],
        "stability": len(unchanged) / union if union else 1.0,
        "unchanged": len(unchanged),
    }


def _parquet_span(path: Path, config: RecommendConfig) -> tuple[datetime, datetime]:
    """First and last ``start_time`` of the rows of a canonical Parquet file in the window,
    read one column at a time (see :func:`_span`)."""
    first = last = None
    rows = 0
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(columns=["start_time"]):
        table = _in_window(pa.Table.from_batches([batch]), config)
        rows += table.num_rows
        bounds = pc.min_max(table["start_time"]).as_py()
        if bounds["min"] is not None:
            first = bounds["min"] if first is None else min(first, bounds["min"])
            last = bounds["max"] if last is None else max(last, bounds["max"])
    if not rows:
        raise ConfigError("cannot split an empty flow table (no flows in the time window).")
    if first is None or last is None:
        raise ConfigError("cannot split: no flow has a start_time.")
    return first, last


def _parquet_part(path: Path, when: datetime, later: bool) -> Iterator[pa.RecordBatch]:
    """The rows of a canonical Parquet file starting before ``when`` (or at or after it)."""
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches():
        start = batch.column("start_time")
        scalar = pa.scalar(when, type=start.type)
        mask = pc.greater_equal(start, scalar) if later else pc.less(start, scalar)
        yield batch.filter(pc.fill_null(mask, False))


def holdout_report(
    flows: pa.Table | str | os.PathLike[str],
    config: RecommendConfig | None = None,
    *,
    holdout: float | None = None,
    split_at: datetime | str | None = None,
) -> dict[str, Any]:
    """Learn on the earlier window, test on the later one (see the module docstring).

    Parameters
    ----------
    flows : pyarrow.Table or path
        Canonical flows, or the path of a canonical Parquet file (streamed: read three times
        with bounded memory); only rows in ``config``'s ``[since, until)`` window are used.
    config : RecommendConfig, optional
        The recommendation's options, used for both windows.
    holdout, split_at
        As for :func:`split_flows`; ``holdout=0.2`` when neither is given.

    Returns
    -------
    dict
        JSON-ready: ``split_at``, ``holdout``, ``learn`` and ``test`` (each window's rows,
        edges, first/last seen, policies and rules), the test window replayed against the
        learned policies (``coverage``, ``false_deny_rate`` = denied / observed allowed
        connections of the test window, ``false_deny_connections``, ``observed_connections``,
        ``false_deny_edges``, ``observed_edges``, ``false_denies`` with examples,
        ``not_evaluated_edges``) and ``churn`` (see :func:`churn`).

    Raises
    ------
    ConfigError
        On invalid options (see :func:`resolve_split`).
    """
    config = config or RecommendConfig()
    if holdout is None and split_at is None:
        holdout = DEFAULT_HOLDOUT
    learn_tables, test_tables, when = _window_tables(flows, config, holdout, split_at)
    learned, learned_findings = synthesize(learn_tables, config)
    later, later_findings = synthesize(test_tables, config)
    # Over-permissiveness is the self-check's business; here only the future's verdicts count.
    coverage = replay(learned, test_tables, synthetic_limit=0, rule_findings=False)
    observed = coverage.observed_connections
    denied = coverage.false_deny_connections
    return {
        "churn": churn(learned, later),
        "coverage": coverage.coverage,
        "false_deny_connections": denied,
        "false_deny_edges": len(coverage.false_denies),
        "false_deny_rate": denied / observed if observed else 0.0,
        "false_denies": [e.to_dict() for e in coverage.false_denies[:_MAX_LISTED]],
        "holdout": None if holdout is None else float(holdout),
        "learn": _window(learn_tables, learned, len(learned_findings.rules)),
        "not_evaluated_edges": len(coverage.not_evaluated),
        "observed_connections": observed,
        "observed_edges": coverage.observed_edges,
        "split_at": when.isoformat(),
        "test": _window(test_tables, later, len(later_findings.rules)),
    }
