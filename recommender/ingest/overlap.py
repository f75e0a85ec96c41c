"""Input sanity: the same connections in several files of different formats, several clusters
in one input, and far-apart windows.

A cluster's traffic is often exported several ways at once (Hubble events and Calico flow logs
of the same connections, or a canonical Parquet copy next to its source). Read together, each
connection would count twice and the coarser copy (Calico's aggregated records) would add
rules of its own. :class:`OverlapCheck` watches the canonical batches as they stream past and
notes, per input file, its time window and the connections it holds (namespace, workload,
protocol, port); :meth:`InputCheck.findings` then says which files of different formats hold
mostly the same connections in overlapping windows, keeping the most detailed copy.

It also counts the rows of each cluster and each day. A row's cluster is what the flow log
says of the cluster it was observed in (``docs/flow-schema.md``, "Clusters"): the ``cluster/``
prefix of the node name (Hubble Relay in a ClusterMesh names nodes ``cluster/node``), else the
``io.cilium.k8s.policy.cluster`` label Cilium gives every pod of the observing endpoint (the
source for egress, the destination for ingress), else that of the other endpoint. Calico
Enterprise and Goldmane records name no cluster (``host`` is a node), so their rows count as
of no known cluster. Two or more clusters, or days more than :data:`FAR_APART` apart (within
one file as well as across files), give one warning each, naming the parts and their rows.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["CLUSTER_LABEL", "FIDELITY", "InputCheck", "InputFindings", "OverlapCheck",
           "OverlapFindings", "row_cluster"]

#: Formats from the most detailed (kept when copies overlap) to the coarsest.
FIDELITY: Final = ("parquet", "csv", "hubble", "goldmane", "whisker", "calico", "calico-text")
#: Share of the smaller file's connections the larger must hold for the two to be copies.
OVERLAP_SHARE: Final = 0.5
#: The label Cilium gives every pod with the name of its cluster.
CLUSTER_LABEL: Final = "io.cilium.k8s.policy.cluster"
#: Days with flows further apart than this are worth a word.
FAR_APART: Final = timedelta(days=7)
_KEY: Final = (
    "src_namespace", "src_workload", "dst_namespace",
    "dst_workload", "protocol", "dst_port",
)


@dataclass
class _File:
    """An input file: the format it was read as, that of its rows' origin (a canonical file
    keeps its rows' ``source_format``), its connections and window."""

    format: str
    detail: str
    keys: set[tuple[Any, ...]] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None

    def rank(self, name: str) -> tuple[int, int, str]:
        """Most detailed first: by the rows' origin, then by the format read (a canonical
        copy before its source), then by name."""
        return (_rank(self.detail), _rank(self.format), name)

    def described(self) -> str:
        return self.format if self.detail == self.format else f"{self.format} of {self.detail}"


@dataclass(frozen=True)
class InputFindings:
    """What :meth:`InputCheck.findings` found: the files left out (copies of others), a
    warning per finding, and the rows of each named cluster (of the files kept)."""

    dropped: tuple[str, ...]
    warnings: tuple[str, ...]
    clusters: dict[str, int] = field(default_factory=dict)


OverlapFindings = InputFindings


class InputCheck:
    """Watches canonical batches, each from one input file (see the module docstring).

    ``connections`` notes each file's connections (for copies among files of different
    formats); without it only rows, clusters and days are counted."""

    def __init__(self, *, connections: bool = True) -> None:
        self._files: dict[str, _File] = {}
        self._connections = connections
        #: Rows per (input file, cluster or None, day).
        self._parts: Counter[tuple[str, str | None, date]] = Counter()

    def observe(self, batch: pa.RecordBatch, file: str | None = None,
                fmt: str | None = None) -> None:
        """Note the rows of ``batch``, all from the input file ``file`` read as format ``fmt``
        (None: each row's ``source_file`` and ``source_format``)."""
        if not batch.num_rows:
            return
        if file is None:
            for name in pc.unique(batch.column("source_file")).to_pylist():
                part = batch.filter(pc.equal(batch.column("source_file"), name))
                self.observe(part, str(name), str(part.column("source_format")[0]))
            return
        detail = str(batch.column("source_format")[0])
        entry = self._files.setdefault(file, _File(fmt or detail, detail))
        if self._connections:
            self._observe_connections(batch, entry)
        if "node" in batch.schema.names:
            self._observe_parts(batch, file)
        else:  # a test's small batch: no cluster known
            days = pc.floor_temporal(batch.column("start_time"), unit="day")
            for row in pa.table({"day": days}).group_by(["day"], use_threads=False).aggregate(
                [([], "count_all")]
            ).to_pylist():
                self._parts[(file, None, row["day"].date())] += row["count_all"]

    def _observe_connections(self, batch: pa.RecordBatch, entry: _File) -> None:
        table = pa.Table.from_batches([batch]).select([*_KEY, "start_time"])
        grouped = table.group_by(list(_KEY), use_threads=False).aggregate(
            [("start_time", "min"), ("start_time", "max")]
        )
        for row in grouped.to_pylist():
            entry.keys.add(tuple(row[k] for k in _KEY))
            low, high = row["start_time_min"], row["start_time_max"]
            if low is not None and (entry.first is None or low < entry.first):
                entry.first = low
            if high is not None and (entry.last is None or high > entry.last):
                entry.last = high

    def _observe_parts(self, batch: pa.RecordBatch, file: str) -> None:
        table = pa.table({
            "node": batch.column("node"),
            "src": pc.map_lookup(batch.column("src_labels"), CLUSTER_LABEL, "first"),
            "dst": pc.map_lookup(batch.column("dst_labels"), CLUSTER_LABEL, "first"),
            "direction": batch.column("traffic_direction"),
            "day": pc.floor_temporal(batch.column("start_time"), unit="day"),
        })
        keys = ["node", "src", "dst", "direction", "day"]
        grouped = table.group_by(keys, use_threads=False).aggregate([([], "count_all")])
        for row in grouped.to_pylist():
            cluster = row_cluster(row["node"], row["src"], row["dst"], row["direction"])
            self._parts[(file, cluster, row["day"].date())] += row["count_all"]

    def add_counts(self, file: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of ``file`` counted elsewhere (a DuckDB scan), as (node, source cluster label,
        destination cluster label, direction, day, rows) tuples."""
        for node, src, dst, direction, day, n in rows:
            self._parts[(file, row_cluster(node, src, dst, direction), day)] += int(n)

    def merge(self, other: InputCheck) -> None:
        """Add ``other``'s counts (of other files, or other parts of the same files)."""
        self._parts.update(other._parts)
        for name, theirs in other._files.items():
            mine = self._files.get(name)
            if mine is None:
                self._files[name] = theirs
                continue
            mine.keys |= theirs.keys
            if theirs.first is not None and (mine.first is None or theirs.first < mine.first):
                mine.first = theirs.first
            if theirs.last is not None and (mine.last is None or theirs.last > mine.last):
                mine.last = theirs.last

    def rows_of(self, name: str) -> int:
        """Rows of the input file ``name`` seen."""
        return sum(n for (file, _, _), n in self._parts.items() if file == name)

    def findings(self) -> InputFindings:
        """Copies among files of different formats (the coarser left out), clusters and
        far-apart windows of the rows kept."""
        files = sorted(self._files.items(), key=lambda kv: kv[1].rank(kv[0]))
        dropped: list[str] = []
        warnings: list[str] = []
        for i, (name, mine) in enumerate(files):
            if name in dropped or not mine.keys:
                continue
            for other, theirs in files[i + 1:]:
                if other in dropped or theirs.format == mine.format or not theirs.keys:
                    continue
                if not _windows_meet(mine, theirs):
                    continue
                share = len(mine.keys & theirs.keys) / min(len(mine.keys), len(theirs.keys))
                if share >= OVERLAP_SHARE:
                    dropped.append(other)
                    warnings.append(
                        f"{other} ({theirs.described()}) holds the same connections as {name} "
                        f"({mine.described()}) in the same window ({share:.0%} of them): each "
                        f"connection is counted once, from {name}; {other} is left out "
                        f"({_rows(self.rows_of(other))}, counted as overlap copies)."
                    )
        kept = Counter[tuple[str | None, date]]()
        for (file, cluster, day), n in self._parts.items():
            if file not in dropped:
                kept[(cluster, day)] += n
        warnings.extend(_far_apart(kept))
        clusters = Counter[str]()
        for (cluster, _), n in kept.items():
            if cluster is not None:
                clusters[cluster] += n
        if len(clusters) > 1:
            named = ", ".join(f"{_shown(c)} ({_rows(n)})" for c, n in sorted(clusters.items()))
            unnamed = sum(n for (c, _), n in kept.items() if c is None)
            rest = f"; {_rows(unnamed)} name no cluster" if unnamed else ""
            warnings.append(
                f"the input mixes {len(clusters)} clusters: {named}{rest}. The policies allow "
                "what any of them saw, in every cluster: give one cluster's flows per run."
            )
        return InputFindings(tuple(dropped), tuple(warnings), dict(sorted(clusters.items())))


OverlapCheck = InputCheck


def row_cluster(node: str | None, src: str | None, dst: str | None,
                direction: str | None) -> str | None:
    """The cluster a row was observed in (see the module docstring), or None."""
    if node and "/" in node:
        return node.split("/", 1)[0] or None
    local, remote = (dst, src) if direction == "ingress" else (src, dst)
    return local or remote or None


def _shown(name: str) -> str:
    """A cluster name from the flows, safe on a terminal: control characters escaped, long
    names cut (the name comes from labels and node names anyone may set)."""
    text = name if name.isprintable() else name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def _far_apart(rows: Counter[tuple[str | None, date]]) -> list[str]:
    """One warning when the days with rows fall in parts more than :data:`FAR_APART` apart."""
    per_day = Counter[date]()
    for (_, day), n in rows.items():
        per_day[day] += n
    days = sorted(per_day)
    if len(days) < 2:
        return []
    parts: list[list[date]] = [[days[0]]]
    gaps: list[int] = []
    for before, after in itertools.pairwise(days):
        if after - before > FAR_APART:
            gaps.append((after - before).days)
            parts.append([])
        parts[-1].append(after)
    if len(parts) < 2:
        return []
    described = [
        (f"{p[0]:%Y-%m-%d}" if p[0] == p[-1] else f"{p[0]:%Y-%m-%d}..{p[-1]:%Y-%m-%d}")
        + f" ({_rows(sum(per_day[d] for d in p))})"
        for p in parts
    ]
    apart = " and ".join(f"{g} days" for g in gaps)
    return [
        f"the flows fall in {len(parts)} windows far apart: {', '.join(described)}; "
        f"{apart} apart (different clusters or deployments?). The policies allow what "
        "each saw: --last DURATION or --since/--until picks one window."
    ]


def _rank(fmt: str) -> int:
    return FIDELITY.index(fmt) if fmt in FIDELITY else len(FIDELITY)


def _windows_meet(a: _File, b: _File) -> bool:
    if a.first is None or a.last is None or b.first is None or b.last is None:
        return True
    return a.first <= b.last and b.first <= a.last
