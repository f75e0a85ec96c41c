"""The incremental state of a scheduled job: every edge ever learned, and each namespace's
recommendation lifecycle.

A nightly job reads a rolling window of flows (say the last 7 days), but traffic that happens
once a fortnight must not lose its rule the day it leaves the window. So every run merges the
window's edges into the state kept from earlier runs (:func:`merge_edges`): an edge seen in the
window takes the window's numbers and keeps its earliest ``first_seen``; an edge not in the window
is kept as it was. Policies are synthesised from the merged edges, so a rule lives until its
edge has been unseen for the *retention* period; it is then **stale**: reported, and left out
of the policies unless ``prune_stale`` is false. An edge unseen for twice the retention is
forgotten.

Each namespace's set of policies and rules has a lifecycle like Calico Enterprise's policy
recommendations (:func:`update_lifecycle`):

``learning``
    its policies changed in this run (or it is new);
``stabilising``
    unchanged since, but not yet for ``stable_runs`` runs or the ``stable_after`` period;
``stable``
    unchanged for ``stable_runs`` consecutive runs, or for ``stable_after``.

The state is three Parquet files kept beside the outputs (:meth:`State.to_files`). See
``docs/deployment.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ..aggregate.edges import EdgeTables
from ..errors import ConfigError
from ..evaluation.diff import rule_key
from ..policy.model import PolicySet

__all__ = [
    "EDGE_KEY",
    "STATE_FILES",
    "EdgeMerge",
    "LifecycleOptions",
    "NamespaceState",
    "RolloutOptions",
    "State",
    "Status",
    "merge_edges",
    "namespace_digests",
    "update_lifecycle",
    "update_rollout",
]

#: The columns that identify an edge (as :func:`~recommender.aggregate.edges.aggregate_edges`
# groups).
EDGE_KEY: Final = (
    "src_kind",
    "src_namespace",
    "src_id",
    "src_name",
    "dst_kind",
    "dst_namespace",
    "dst_id",
    "dst_name",
    "protocol",
    "dst_port",
)

#: Version of the state files' layout; a state of another version is refused.
STATE_VERSION: Final = "1"

#: File names of the state, beside the outputs.
STATE_FILES: Final = {
    "edges": "state-edges.parquet",
    "labels": "state-labels.parquet",
    "namespaces": "state-namespaces.parquet",
}

Status = Literal["learning", "stabilising", "stable"]

_NAMESPACE_SCHEMA: Final = pa.schema(
    [
        ("namespace", pa.string()),
        ("status", pa.string()),
        ("digest", pa.string()),
        ("policies", pa.int64()),
        ("rules", pa.int64()),
        ("first_run", pa.timestamp("us", tz="UTC")),
        ("changed_at", pa.timestamp("us", tz="UTC")),
        ("unchanged_runs", pa.int64()),
        ("enforcing", pa.bool_()),
        ("clean_since", pa.timestamp("us", tz="UTC")),
        ("would_deny", pa.int64()),
    ]
)


@dataclass(frozen=True)
class LifecycleOptions:
    """When rules go stale and namespaces become stable.

    Attributes
    ----------
    retention
        An edge unseen for this long is stale (default 30 days).
    prune_stale
        Stale edges get no rule (True, the default) or keep their rule (False); either way
        they are reported.
    stable_runs
        Consecutive runs without a change after which a namespace is ``stable``.
    stable_after
        Or a period without a change after which it is ``stable`` (None: runs only).
    """

    retention: timedelta = timedelta(days=30)
    prune_stale: bool = True
    stable_runs: int = 3
    stable_after: timedelta | None = None

    def __post_init__(self) -> None:
        if self.retention <= timedelta(0):
            raise ConfigError("retention_days must be more than 0.")
        if isinstance(self.stable_runs, bool) or self.stable_runs < 1:
            raise ConfigError(f"stable_runs must be at least 1, not {self.stable_runs!r}.")
        if self.stable_after is not None and self.stable_after <= timedelta(0):
            raise ConfigError("stable_after_days must be more than 0.")


@dataclass(frozen=True)
class NamespaceState:
    """One namespace's lifecycle (a row of ``state-namespaces.parquet``).

    Attributes
    ----------
    namespace, status
        The namespace and its :data:`Status`.
    digest
        SHA-256 of its policy names and rule keys: equal digests mean unchanged policies.
    policies, rules
        How many policies and rules it has.
    first_run, changed_at
        When (the run's ``as_of`` time) it first got policies, and when they last changed.
    unchanged_runs
        Runs since the last change (0 in the run that changed them).
    enforcing
        With a staged rollout (:class:`RolloutOptions`): whether the namespace's policies are
        written in their enforcing form (False: staged).
    clean_since
        With a staged rollout: since when the cluster reported no would-deny on wanted traffic
        for the namespace (None: not staged yet).
    would_deny
        Connections of wanted traffic its staged policies would deny, in this run's window.
    """

    namespace: str
    status: Status
    digest: str
    policies: int
    rules: int
    first_run: datetime
    changed_at: datetime
    unchanged_runs: int
    enforcing: bool = False
    clean_since: datetime | None = None
    would_deny: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "changed_at": self.changed_at.isoformat(),
            "first_run": self.first_run.isoformat(),
            "namespace": self.namespace,
            "policies": self.policies,
            "rules": self.rules,
            "status": self.status,
            "unchanged_runs": self.unchanged_runs,
            "enforcing": self.enforcing,
            "clean_since": self.clean_since.isoformat() if self.clean_since else None,
            "would_deny": self.would_deny,
        }


@dataclass(frozen=True)
class State:
    """The state a run leaves for the next.

    Attributes
    ----------
    edges
        Every remembered edge, columns as :attr:`EdgeTables.edges` (None before the first run).
    labels
        Workload label maps of the remembered edges' workloads, as
        :attr:`EdgeTables.workload_labels` (None before the first run).
    namespaces
        Each namespace's lifecycle, by namespace.
    run_at
        The previous run's ``as_of`` time (None before the first run).
    runs
        How many runs made this state.
    """

    edges: pa.Table | None = None
    labels: pa.Table | None = None
    namespaces: dict[str, NamespaceState] = field(default_factory=dict)
    run_at: datetime | None = None
    runs: int = 0

    def to_files(self) -> dict[str, bytes]:
        """The state as Parquet files (name → bytes, names from :data:`STATE_FILES`)."""
        meta = {
            b"recommender.state_version": STATE_VERSION.encode(),
            b"recommender.run_at": (self.run_at.isoformat() if self.run_at else "").encode(),
            b"recommender.runs": str(self.runs).encode(),
        }
        rows = [self.namespaces[ns] for ns in sorted(self.namespaces)]
        namespaces = pa.Table.from_pylist(
            [
                {
                    "namespace": r.namespace,
                    "status": r.status,
                    "digest": r.digest,
                    "policies": r.policies,
                    "rules": r.rules,
                    "first_run": r.first_run,
                    "changed_at": r.changed_at,
                    "unchanged_runs": r.unchanged_runs,
                    "enforcing": r.enforcing,
                    "clean_since": r.clean_since,
                    "would_deny": r.would_deny,
                }
                for r in rows
            ],
            schema=_NAMESPACE_SCHEMA,
        )
        out = {STATE_FILES["namespaces"]: _parquet(namespaces, meta)}
        if self.edges is not None:
            out[STATE_FILES["edges"]] = _parquet(self.edges, meta)
        if self.labels is not None:
            out[STATE_FILES["labels"]] = _parquet(self.labels, meta)
        return out

    @classmethod
    def from_files(cls, read: Callable[[str], bytes | None]) -> State:
        """Read a state written by :meth:`to_files`; ``read(name)`` returns a file's bytes or
        None. No namespaces file means no state (the first run).

        Raises
        ------
        ConfigError
            If a file is not a state of this version.
        """
        raw = read(STATE_FILES["namespaces"])
        if raw is None:
            return cls()
        namespaces, meta = _read_parquet(raw, STATE_FILES["namespaces"])
        run_at_text = meta.get(b"recommender.run_at", b"").decode()
        rows = {}
        for r in namespaces.to_pylist():
            status = r["status"]
            if status not in ("learning", "stabilising", "stable"):
                raise ConfigError(
                    f"{STATE_FILES['namespaces']}: unknown status {status!r}; delete the state "
                    "files to start learning afresh."
                )
            # A state written before staged rollouts has no rollout columns: not staged yet.
            r["enforcing"] = bool(r.get("enforcing") or False)
            r["would_deny"] = int(r.get("would_deny") or 0)
            r.setdefault("clean_since", None)
            rows[r["namespace"]] = NamespaceState(**r)
        tables = {}
        for kind in ("edges", "labels"):
            data = read(STATE_FILES[kind])
            tables[kind] = None if data is None else _read_parquet(data, STATE_FILES[kind])[0]
        return cls(
            edges=tables["edges"],
            labels=tables["labels"],
            namespaces=rows,
            run_at=datetime.fromisoformat(run_at_text) if run_at_text else None,
            runs=int(meta.get(b"recommender.runs", b"0") or 0),
        )


def _parquet(table: pa.Table, meta: dict[bytes, bytes]) -> bytes:
    sink = io.BytesIO()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _read_parquet(data: bytes, name: str) -> tuple[pa.Table, dict[bytes, bytes]]:
    """A state table without its metadata, and the metadata."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(
            f"{name}: not a readable Parquet file ({exc}); delete the state files to start "
            "learning afresh."
        ) from None
    meta = dict(table.schema.metadata or {})
    version = meta.get(b"recommender.state_version", b"").decode()
    if version != STATE_VERSION:
        raise ConfigError(
            f"{name}: state version {version or 'unknown'!r}, this recommender reads version "
            f"{STATE_VERSION!r}; delete the state files to start learning afresh."
        )
    return table.replace_schema_metadata(None), meta


# --------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class EdgeMerge:
    """The result of :func:`merge_edges`.

    Attributes
    ----------
    remembered
        Every edge to keep in the state (stale ones too, until forgotten).
    active
        The edges policies are synthesised from (stale ones left out when pruning).
    labels
        Label maps of the workloads of ``active``: the window's, and the state's for workloads
        not seen in the window.
    new_edges
        Edges of the window that were not in the state.
    stale
        Edges stale now (unseen for the retention period), as a table like ``remembered``.
    newly_stale
        How many of them were not stale at the previous run.
    forgotten
        Edges dropped from the state (unseen for twice the retention).
    """

    remembered: pa.Table
    active: pa.Table
    labels: pa.Table
    new_edges: int
    stale: pa.Table
    newly_stale: int
    forgotten: int

    def tables(self, window: EdgeTables) -> EdgeTables:
        """The window's :class:`EdgeTables` with the merged edges and labels."""
        return EdgeTables(
            edges=self.active,
            denied=window.denied,
            excluded=window.excluded,
            workload_labels=self.labels,
            rows_used=window.rows_used,
            first_seen=window.first_seen,
            last_seen=window.last_seen,
        )


def _same(a: str, b: str) -> str:
    return " AND ".join(f"{a}.{k} IS NOT DISTINCT FROM {b}.{k}" for k in EDGE_KEY)


_ORDER: Final = (
    "ORDER BY src_kind, src_namespace NULLS FIRST, src_id, dst_kind, dst_namespace NULLS FIRST, "
    "dst_id, protocol, dst_port NULLS FIRST, src_name NULLS FIRST, dst_name NULLS FIRST, "
    "first_seen"
)


def merge_edges(
    state: State, window: EdgeTables, as_of: datetime, options: LifecycleOptions
) -> EdgeMerge:
    """Merge the window's edges into the state's (see the module docstring).

    Parameters
    ----------
    state : State
        The previous run's state (empty on the first run).
    window : EdgeTables
        The aggregation of this run's window.
    as_of : datetime
        The run's time (aware); ages are measured from it.
    options : LifecycleOptions
        Retention and pruning.

    Returns
    -------
    EdgeMerge

    Raises
    ------
    ConfigError
        If the state's edges do not have the columns of this version's edges.
    """
    schema = window.edges.schema
    old = state.edges if state.edges is not None else schema.empty_table()
    for name in ("established", "failed"):  # counted by outcome since schema 1.1: unknown
        if name in schema.names and name not in old.column_names:
            old = old.append_column(name, pa.array([0] * old.num_rows, pa.int64()))
    try:
        old = old.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowException) as exc:
        raise ConfigError(
            f"{STATE_FILES['edges']}: its columns do not fit this version's edges ({exc}); delete "
            "the state files to start learning afresh."
        ) from None
    stale_before = as_of - options.retention
    forget_before = as_of - 2 * options.retention
    previous_stale_before = (state.run_at or as_of) - options.retention
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("w", window.edges)
    con.register("s", old)
    con.sql(
        f"""
        CREATE TEMP TABLE merged AS
        SELECT w.* REPLACE (
                   least(w.first_seen, coalesce(s.first_seen, w.first_seen)) AS first_seen,
                   greatest(w.last_seen, coalesce(s.last_seen, w.last_seen)) AS last_seen),
               s.src_kind IS NULL AS is_new
        FROM w LEFT JOIN s ON {_same("w", "s")}
        UNION ALL BY NAME
        SELECT s.*, false AS is_new FROM s ANTI JOIN w ON {_same("w", "s")}
        """
    )
    new_edges = _count(con, "SELECT count(*) FROM merged WHERE is_new")
    forgotten = _count(con, "SELECT count(*) FROM merged WHERE last_seen < ?", [forget_before])
    newly_stale = _count(
        con,
        "SELECT count(*) FROM merged WHERE last_seen < ? AND last_seen >= ? AND NOT is_new",
        [stale_before, previous_stale_before],
    )
    columns = ", ".join(f'"{c}"' for c in schema.names)
    remembered = con.sql(
        f"SELECT {columns} FROM merged WHERE last_seen >= ? {_ORDER}", params=[forget_before]
    ).to_arrow_table()
    stale = con.sql(
        f"SELECT {columns} FROM merged WHERE last_seen < ? AND last_seen >= ? {_ORDER}",
        params=[stale_before, forget_before],
    ).to_arrow_table()
    if options.prune_stale:
        active = con.sql(
            f"SELECT {columns} FROM merged WHERE last_seen >= ? {_ORDER}", params=[stale_before]
        ).to_arrow_table()
    else:
        active = remembered
    labels = _merge_labels(state.labels, window.workload_labels, active)
    return EdgeMerge(
        remembered=remembered.cast(schema),
        active=active.cast(schema),
        labels=labels,
        new_edges=new_edges,
        stale=stale.cast(schema),
        newly_stale=newly_stale,
        forgotten=forgotten,
    )


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> int:
    rows = con.sql(sql, params=params or []).fetchall()
    return int(rows[0][0]) if rows else 0


def _merge_labels(old: pa.Table | None, window: pa.Table, active: pa.Table) -> pa.Table:
    """The window's label rows, plus the state's rows of workloads of ``active`` edges that the
    window did not see."""
    if old is None or old.num_rows == 0:
        return window
    seen = set(zip(window["namespace"].to_pylist(), window["workload"].to_pylist(), strict=True))
    wanted: set[tuple[Any, Any]] = set()
    for side in ("src", "dst"):
        cols = active.select([f"{side}_kind", f"{side}_namespace", f"{side}_id"]).to_pydict()
        wanted.update(
            (ns, wl)
            for kind, ns, wl in zip(*cols.values(), strict=True)
            if kind == "workload"
        )
    keys = zip(old["namespace"].to_pylist(), old["workload"].to_pylist(), strict=True)
    mask = pa.array([k in wanted and k not in seen for k in keys], pa.bool_())
    kept = old.filter(mask)
    if kept.num_rows == 0:
        return window
    try:
        kept = kept.select(window.schema.names).cast(window.schema)
    except (KeyError, pa.ArrowException) as exc:
        raise ConfigError(
            f"{STATE_FILES['labels']}: its columns do not fit this version's labels ({exc}); "
            "delete the state files to start learning afresh."
        ) from None
    merged = pa.concat_tables([window, kept])
    return merged.sort_by([("namespace", "ascending"), ("workload", "ascending")])


# --------------------------------------------------------------------------- lifecycle


def namespace_digests(policy_set: PolicySet) -> dict[str, tuple[str, int, int]]:
    """Per namespace: (digest of its policy names and rule keys, policies, rules)."""
    out: dict[str, tuple[str, int, int]] = {}
    for namespace in sorted({p.namespace for p in policy_set.policies}):
        policies = policy_set.in_namespace(namespace)
        keys = sorted({rule_key(p, r) for p in policies for r in p.rules})
        names = sorted(p.name for p in policies)
        text = json.dumps([names, keys], separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        out[namespace] = (digest, len(policies), len(keys))
    return out


def update_lifecycle(
    previous: dict[str, NamespaceState],
    digests: dict[str, tuple[str, int, int]],
    as_of: datetime,
    options: LifecycleOptions,
) -> tuple[dict[str, NamespaceState], list[dict[str, Any]]]:
    """Each namespace's next lifecycle state, and the transitions (see the module docstring).

    Parameters
    ----------
    previous : dict of str to NamespaceState
        The state's namespaces.
    digests : dict of str to (str, int, int)
        This run's :func:`namespace_digests`.
    as_of : datetime
        The run's time.
    options : LifecycleOptions
        ``stable_runs`` and ``stable_after``.

    Returns
    -------
    (dict of str to NamespaceState, list of dict)
        The new states, and one ``{"namespace", "from", "to"}`` per namespace whose status
        changed (``from`` None for a new namespace, ``to`` None for one that has no policies
        any more).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> opts = LifecycleOptions(stable_runs=2)
    >>> s, _ = update_lifecycle({}, {"shop": ("d1", 2, 3)}, t, opts)
    >>> s, _ = update_lifecycle(s, {"shop": ("d1", 2, 3)}, t, opts)
    >>> s["shop"].status
    'stabilising'
    >>> s, _ = update_lifecycle(s, {"shop": ("d1", 2, 3)}, t, opts)
    >>> s["shop"].status
    'stable'
    >>> s, moves = update_lifecycle(s, {"shop": ("d2", 2, 4)}, t, opts)
    >>> s["shop"].status, moves
    ('learning', [{'from': 'stable', 'namespace': 'shop', 'to': 'learning'}])
    """
    out: dict[str, NamespaceState] = {}
    moves: list[dict[str, Any]] = []
    for namespace, (digest, policies, rules) in sorted(digests.items()):
        before = previous.get(namespace)
        status: Status
        if before is None or before.digest != digest:
            status, unchanged, changed_at = "learning", 0, as_of
        else:
            unchanged, changed_at = before.unchanged_runs + 1, before.changed_at
            long_enough = options.stable_after is not None and (
                as_of - changed_at >= options.stable_after
            )
            status = "stable" if unchanged >= options.stable_runs or long_enough else "stabilising"
        out[namespace] = NamespaceState(
            namespace=namespace,
            status=status,
            digest=digest,
            policies=policies,
            rules=rules,
            first_run=before.first_run if before is not None else as_of,
            changed_at=changed_at,
            unchanged_runs=unchanged,
            # changed policies are staged afresh; unchanged ones keep their rollout
            enforcing=before is not None and before.enforcing and status != "learning",
            clean_since=before.clean_since if before is not None and status != "learning" else None,
        )
        if before is None or before.status != status:
            moves.append(
                {"from": before.status if before else None, "namespace": namespace, "to": status}
            )
    for namespace in sorted(set(previous) - set(digests)):
        moves.append({"from": previous[namespace].status, "namespace": namespace, "to": None})
    return out, moves


def stale_rows(table: pa.Table, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows of an edge table as short JSON-ready dicts."""
    keep = ["src_namespace", "src_id", "dst_namespace", "dst_id", "protocol", "dst_port"]
    rows: Iterable[dict[str, Any]] = table.select([*keep, "last_seen"]).slice(0, limit).to_pylist()
    return [
        {**{k: r[k] for k in keep}, "last_seen": r["last_seen"].isoformat()} for r in rows
    ]


@dataclass(frozen=True)
class RolloutOptions:
    """A staged rollout per namespace (the ``rollout:`` section of a job; docs/deployment.md).

    Attributes
    ----------
    staged
        While a namespace is learning or stabilising, write its policies in a form the cluster
        evaluates without enforcing (Calico staged kinds; Kubernetes and Cilium under
        ``_staged/``, outside the kustomization), and promote them to the enforcing form once
        stable and clean. False (the default): every namespace is written enforcing.
    promote_after
        How long a stable namespace must go with no would-deny on wanted traffic before its
        policies are promoted.
    """

    staged: bool = False
    promote_after: timedelta = timedelta(days=3)

    def __post_init__(self) -> None:
        if self.promote_after < timedelta(0):
            raise ConfigError("promote_after_days must be 0 or more.")


def update_rollout(
    namespaces: dict[str, NamespaceState],
    would_deny: Mapping[str, int],
    as_of: datetime,
    options: RolloutOptions,
) -> tuple[dict[str, NamespaceState], list[dict[str, Any]]]:
    """Apply the cluster's staged verdicts to each namespace's lifecycle.

    A namespace with would-deny on wanted traffic (``would_deny``: connections by namespace)
    goes back to ``stabilising`` (its unchanged runs start again, its clean period restarts
    now, and enforcing policies go back to staged); a ``stable`` namespace whose clean period
    has lasted ``promote_after`` is promoted to its enforcing form. Returns the new states and
    one ``{"namespace", "from", "to", "reason"}`` per reset or promotion.

    Examples
    --------
    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> ns = NamespaceState("shop", "stable", "d", 1, 1, t, t, 3, clean_since=t)
    >>> opts = RolloutOptions(staged=True, promote_after=timedelta(days=2))
    >>> s, moves = update_rollout({"shop": ns}, {}, t + timedelta(days=2), opts)
    >>> s["shop"].enforcing, moves[0]["to"]
    (True, 'enforcing')
    >>> s, moves = update_rollout(s, {"shop": 37}, t + timedelta(days=3), opts)
    >>> s["shop"].status, s["shop"].enforcing, moves[0]["reason"]
    ('stabilising', False, 'would deny 37 connections of wanted traffic')
    """
    out: dict[str, NamespaceState] = {}
    moves: list[dict[str, Any]] = []
    for name, ns in sorted(namespaces.items()):
        denied = int(would_deny.get(name, 0))
        if denied:
            status: Status = "learning" if ns.status == "learning" else "stabilising"
            out[name] = replace(
                ns, status=status, unchanged_runs=0 if status != "learning" else ns.unchanged_runs,
                enforcing=False, clean_since=as_of, would_deny=denied,
            )
            moves.append({
                "namespace": name, "from": "enforcing" if ns.enforcing else ns.status,
                "to": status,
                "reason": f"would deny {denied} connection{'s' if denied != 1 else ''} of "
                "wanted traffic",
            })
            continue
        clean_since = ns.clean_since or as_of
        promote = (
            not ns.enforcing and ns.status == "stable"
            and as_of - clean_since >= options.promote_after
        )
        out[name] = replace(
            ns, clean_since=clean_since, would_deny=0, enforcing=ns.enforcing or promote
        )
        if promote:
            moves.append({
                "namespace": name, "from": "stable", "to": "enforcing",
                "reason": f"stable, and no would-deny since {clean_since:%Y-%m-%d}",
            })
    return out, moves
