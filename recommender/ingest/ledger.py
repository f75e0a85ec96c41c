"""The ingest ledger: every input record is accounted for.

Each record a reader sees ends in exactly one outcome: ``used`` (a row of the canonical table),
``duplicate`` (merged into a row already kept: a second observation point, the other end's
report of the same connection), ``reply`` (a reply-direction event, never a connection start),
``overlap_dropped`` (a row of a file that holds the same connections as a more detailed file of
another format: left out, each connection counted once from the other file),
``outside_window`` (a row outside the time window ``ingest --since/--until/--last`` asked for),
or ``skipped`` with a reason. The invariant
``read == used + duplicate + reply + overlap_dropped + outside_window + skipped`` holds in total
(and ``read`` and ``used`` per file), and is checked by the tests.

Besides, ``outcome_unknown`` counts records that were used but whose connection outcome (see
``docs/flow-schema.md``) could not be read, by reason (``malformed-tcp-flags``,
``impossible-tcp-flags``, ``missing-counters``): the row says ``unknown`` instead; and
``malformed_traces`` counts records that were read but whose policy trace of the staged
rollout could not be read whole (a Calico ``pending_policies``, a Goldmane/Whisker pending
trace, Hubble's ``ingress_denied_by``/``egress_denied_by``/``policy_match_type``), by field: the
row keeps what could be read of it. ``warnings`` holds the input checks' warnings (copies,
several clusters, far-apart windows: :mod:`recommender.ingest.overlap`) and ``clusters`` the
rows of each named cluster.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IngestLedger", "SkipExample"]

#: Skipped records a ledger keeps the place of (file and row), as examples for the report.
MAX_EXAMPLES = 20
_MAX_EXAMPLES = MAX_EXAMPLES


@dataclass(frozen=True)
class SkipExample:
    """Where a skipped record was, and why it was skipped."""

    file: str
    row: int
    reason: str
    detail: str = ""


@dataclass
class IngestLedger:
    """Counts of what happened to every input record.

    Attributes
    ----------
    read, used, duplicate, reply, overlap_dropped, outside_window
        Record counts; ``skipped`` holds the rest by reason.
    outcome_unknown
        Records whose connection outcome could not be read (their rows say ``unknown``), by
        reason; notes, not outcomes: these records are counted above too.
    malformed_traces
        Records whose pending (staged) or audit policy trace was malformed in whole or part, by
        field (``pending_policies``, ``pending``, ``ingress_denied_by``, ``egress_denied_by``,
        ``policy_match_type``); notes too: the records are counted above and their rows keep
        the well-formed part of the trace.
    files
        Per input file: its detected format and its own counts.
    examples
        The first few skipped records, with file and row, for the report.
    warnings, clusters
        The input checks' warnings, and the rows of each cluster the rows name.
    """

    read: int = 0
    used: int = 0
    duplicate: int = 0
    reply: int = 0
    overlap_dropped: int = 0
    outside_window: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    outcome_unknown: Counter[str] = field(default_factory=Counter)
    malformed_traces: Counter[str] = field(default_factory=Counter)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: list[SkipExample] = field(default_factory=list)
    ignored_files: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    clusters: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        """All skipped records, whatever the reason."""
        return sum(self.skipped.values())

    @property
    def balanced(self) -> bool:
        """True when every record read has exactly one outcome."""
        return self.read == (
            self.used + self.duplicate + self.reply + self.overlap_dropped + self.outside_window
            + self.skipped_total
        )

    def drop_copies(self, file: str, rows: int) -> None:
        """Move the ``rows`` used rows of ``file`` to ``overlap_dropped``: the file holds the
        same connections as a more detailed one (:mod:`recommender.ingest.overlap`)."""
        self.used -= rows
        self.overlap_dropped += rows
        entry = self.files.get(file)
        if entry is not None:
            entry["used"] = entry.get("used", 0) - rows
            entry["overlap_dropped"] = entry.get("overlap_dropped", 0) + rows

    def leave_outside_window(self, rows: int) -> None:
        """Move ``rows`` used rows to ``outside_window`` (left out by ``ingest``'s window)."""
        self.used -= rows
        self.outside_window += rows

    def skip(self, file: str, row: int, reason: str, detail: str = "") -> None:
        """Count one skipped record (``reason`` is a short stable key such as ``invalid-ip``)."""
        self.skipped[reason] += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(SkipExample(file, row, reason, detail[:200]))

    def skip_rows(
        self, file: str, first_rows: list[int], count: int, reason: str, detail: str = ""
    ) -> None:
        """Count ``count`` skipped records of ``file`` at once, of which ``first_rows`` are the
        numbers of the first few (at least as many as the examples kept), in order: the same
        counts and examples as ``count`` calls of :meth:`skip`."""
        for row in first_rows[:count]:
            self.skip(file, row, reason, detail)
        if count > len(first_rows):
            self.skipped[reason] += count - len(first_rows)

    def unknown_outcome(self, reason: str) -> None:
        """Count a record whose connection outcome could not be read (``reason`` is a short
        stable key such as ``malformed-tcp-flags``)."""
        self.outcome_unknown[reason] += 1

    def malformed_trace(self, fields: str) -> None:
        """Count a record whose staged or audit policy trace was malformed: ``fields`` names
        the field (several joined with ``,``)."""
        for name in fields.split(","):
            self.malformed_traces[name] += 1

    def ignore_file(self, file: str, reason: str) -> None:
        """Note a file found in a folder that is not a flow log (it holds no records)."""
        self.ignored_files[file] = reason

    def open_file(self, file: str, fmt: str) -> None:
        """Start the per-file counts of ``file``, read as format ``fmt``."""
        self.files[file] = {"format": fmt, "read": self.read, "used": self.used}

    def close_file(self, file: str) -> None:
        """Freeze the per-file counts of ``file``."""
        entry = self.files[file]
        entry["read"] = self.read - entry["read"]
        entry["used"] = self.used - entry["used"]

    def merge(self, other: IngestLedger) -> None:
        """Add ``other``'s counts to this ledger (for ledgers of separate workers)."""
        self.read += other.read
        self.used += other.used
        self.duplicate += other.duplicate
        self.reply += other.reply
        self.overlap_dropped += other.overlap_dropped
        self.outside_window += other.outside_window
        self.warnings.extend(other.warnings)
        for name, rows in other.clusters.items():
            self.clusters[name] = self.clusters.get(name, 0) + rows
        self.skipped.update(other.skipped)
        self.outcome_unknown.update(other.outcome_unknown)
        self.malformed_traces.update(other.malformed_traces)
        self.files.update(other.files)
        self.ignored_files.update(other.ignored_files)
        room = _MAX_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, with sorted keys, for reports."""
        return {
            "read": self.read,
            "used": self.used,
            "duplicate": self.duplicate,
            "reply": self.reply,
            "overlap_dropped": self.overlap_dropped,
            "outside_window": self.outside_window,
            "warnings": list(self.warnings),
            "clusters": dict(sorted(self.clusters.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": self.skipped_total,
            "outcome_unknown": dict(sorted(self.outcome_unknown.items())),
            "malformed_traces": dict(sorted(self.malformed_traces.items())),
            "balanced": self.balanced,
            "files": {k: self.files[k] for k in sorted(self.files)},
            "ignored_files": sorted(self.ignored_files),
            "examples": [
                {"file": e.file, "row": e.row, "reason": e.reason, "detail": e.detail}
                for e in self.examples
            ],
        }
