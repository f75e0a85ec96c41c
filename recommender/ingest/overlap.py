"""Input sanity: the same connections in several files of different formats, and far-apart
windows.

A cluster's traffic is often exported several ways at once (Hubble events and Calico flow logs
of the same connections, or a canonical Parquet copy next to its source). Read together, each
connection would count twice and the coarser copy (Calico's aggregated records) would add
rules of its own. :class:`OverlapCheck` watches the canonical batches as they stream past and
notes, per input file, its time window and the connections it holds (namespace, workload,
protocol, port); :meth:`OverlapCheck.findings` then says which files of different formats hold
mostly the same connections in overlapping windows, keeping the most detailed copy, and which
inputs lie far apart in time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import pyarrow as pa

__all__ = ["FIDELITY", "OverlapCheck", "OverlapFindings"]

#: Formats from the most detailed (kept when copies overlap) to the coarsest.
FIDELITY: Final = ("parquet", "csv", "hubble", "goldmane", "whisker", "calico", "calico-text")
#: Share of the smaller file's connections the larger must hold for the two to be copies.
OVERLAP_SHARE: Final = 0.5
#: Windows further apart than this are worth a word.
FAR_APART: Final = timedelta(days=7)
_KEY: Final = (
    "source_file", "source_format", "src_namespace", "src_workload", "dst_namespace",
    "dst_workload", "protocol", "dst_port",
)


@dataclass
class _File:
    format: str
    keys: set[tuple[Any, ...]] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None


@dataclass(frozen=True)
class OverlapFindings:
    """What :meth:`OverlapCheck.findings` found: the files left out (copies of others) and a
    warning per finding."""

    dropped: tuple[str, ...]
    warnings: tuple[str, ...]


class OverlapCheck:
    """Watches canonical batches (see the module docstring)."""

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Pass ``batches`` through, noting what each file holds."""
        for batch in batches:
            self.observe(batch)
            yield batch

    def observe(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        table = pa.Table.from_batches([batch]).select([*_KEY, "start_time"])
        grouped = table.group_by(list(_KEY), use_threads=False).aggregate(
            [("start_time", "min"), ("start_time", "max")]
        )
        for row in grouped.to_pylist():
            name = str(row["source_file"])
            entry = self._files.setdefault(name, _File(str(row["source_format"])))
            entry.keys.add(tuple(row[k] for k in _KEY[2:]))
            low, high = row["start_time_min"], row["start_time_max"]
            if low is not None and (entry.first is None or low < entry.first):
                entry.first = low
            if high is not None and (entry.last is None or high > entry.last):
                entry.last = high

    def findings(self) -> OverlapFindings:
        """Copies among files of different formats (the coarser left out), far-apart windows."""
        files = sorted(self._files.items(), key=lambda kv: (_rank(kv[1].format), kv[0]))
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
                        f"{other} ({theirs.format}) holds the same connections as {name} "
                        f"({mine.format}) in the same window ({share:.0%} of them): each "
                        f"connection is counted once, from {name}; {other} is left out."
                    )
        kept = [(n, f) for n, f in files if n not in dropped and f.first and f.last]
        kept.sort(key=lambda kv: kv[1].first)  # type: ignore[arg-type,return-value]
        for (a, fa), (b, fb) in itertools.pairwise(kept):
            assert fa.last is not None and fb.first is not None
            if fb.first - fa.last > FAR_APART:
                warnings.append(
                    f"{a} ends {fa.last:%Y-%m-%d} and {b} starts {fb.first:%Y-%m-%d}: windows "
                    f"{(fb.first - fa.last).days} days apart (different clusters or "
                    "deployments?); the policies allow what either saw."
                )
        return OverlapFindings(tuple(dropped), tuple(warnings))


def _rank(fmt: str) -> int:
    return FIDELITY.index(fmt) if fmt in FIDELITY else len(FIDELITY)


def _windows_meet(a: _File, b: _File) -> bool:
    if a.first is None or a.last is None or b.first is None or b.last is None:
        return True
    return a.first <= b.last and b.first <= a.last


def without_files(batches: Iterable[pa.RecordBatch], dropped: Iterable[str]
                  ) -> Iterator[pa.RecordBatch]:
    """``batches`` without the rows of the ``dropped`` files."""
    import pyarrow.compute as pc

    names = pa.array(sorted(set(dropped)), pa.string())
    for batch in batches:
        keep = pc.invert(pc.is_in(batch.column("source_file"), value_set=names))
        filtered = batch.filter(keep)
        if filtered.num_rows:
            yield filtered
