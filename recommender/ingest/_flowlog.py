"""What the Calico-family readers share: value helpers, labels and endpoints, and the merger
of the two reports (``src`` and ``dst``) Calico writes for one connection.

Calico logs a connection once per end (``reporter`` ``src`` on the client's node, ``dst`` on the
server's node), often in different files. :class:`ReportMerger` holds unmatched reports in a
bounded window and folds the two reports of one connection into one row with
``reporter = "both"``.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final

import msgspec

from ._common import BadValue, infer_workload, parse_label_list, to_micros
from .schema import COLUMNS

Row = dict[str, Any]

_decode = msgspec.json.decode
#: RecursionError: msgspec's answer to JSON nested deeper than its recursion limit.
_DECODE_ERRORS = (msgspec.MsgspecError, UnicodeDecodeError, ValueError, RecursionError)
#: Per-record conversion errors that are the input's fault, never the reader's.
_RECORD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError)

#: Unmatched reports are released once their end is this much older than the newest start seen.
MERGE_HORIZON_US: Final = 15 * 60 * 1_000_000
#: At most this many unmatched reports are held back (the oldest is released first).
MERGE_CAP: Final = 500_000
_MAX_COUNT: Final = 1 << 62
_CACHE_LIMIT: Final = 200_000
#: How many records of a file are looked at to decide that it is not of the format at all.
_SHAPE_PROBE: Final = 20

_VERDICTS: Final = {"allow": "allowed", "deny": "denied", "pass": "pass"}


# --------------------------------------------------------------------------------------------
# Small value helpers
# --------------------------------------------------------------------------------------------


def text_or_none(value: Any) -> str | None:
    """A string field; None for absent, empty and ``-`` (Calico's "not logged / aggregated")."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        return None if value in ("", "-") else value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue("invalid-value", f"{value!r} is not a string")
    return str(value)


def count_or_none(value: Any, field: str) -> int | None:
    """A non-negative counter; None when absent or ``-``."""
    if value is None or value == "-" or value == "":
        return None
    if isinstance(value, bool):
        raise BadValue("invalid-counter", f"{field} is {value!r}")
    if isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and value.strip().isdigit()
    ):
        number = int(value)
    else:
        raise BadValue("invalid-counter", f"{field} is {value!r}")
    if not 0 <= number < _MAX_COUNT:
        raise BadValue("invalid-counter", f"{field} {number} is out of range")
    return number


def add_counts(a: int | None, b: int | None) -> int | None:
    """``a + b`` where an absent counter is 0; None when both are absent."""
    if a is None and b is None:
        return None
    return (a or 0) + (b or 0)


def verdict_of(value: Any) -> str:
    """``allowed``/``denied``/``pass`` from ``allow``/``deny``/``pass`` (any case)."""
    verdict = _VERDICTS.get(value.strip().lower()) if isinstance(value, str) else None
    if verdict is None:
        raise BadValue("invalid-action", f"action {value!r} is not allow, deny or pass")
    return verdict


_REPORTERS: Final = {
    "src": "src",
    "source": "src",
    "out": "src",
    "dst": "dst",
    "dest": "dst",
    "destination": "dst",
    "in": "dst",
    "fwd": "fwd",
}


def reporter_of(value: Any) -> str | None:
    """``src``/``dst``/``fwd``; composite ``"dst, fwd"`` counts as its endpoint part (``dst``).

    A report that names an endpoint side carries that endpoint's policy verdict, so it is merged
    with the other end's report; ``fwd`` alone (a transit host) is never merged.
    """
    if not isinstance(value, str):
        return None
    parts = {_REPORTERS.get(p.strip().lower()) for p in value.split(",")}
    for side in ("src", "dst", "fwd"):
        if side in parts:
            return side
    return None


def micros_of(value: Any, field: str) -> int | None:
    """Microseconds from Unix seconds (or an RFC 3339 string); None when absent."""
    if value is None or value == "" or value == "-":
        return None
    return to_micros(value, field)


# --------------------------------------------------------------------------------------------
# Labels and endpoints (cached: the same few label sets and names repeat on millions of lines)
# --------------------------------------------------------------------------------------------

_LABEL_CACHE: dict[Hashable, dict[str, str]] = {}


def _labels_from_text(text: str) -> dict[str, str]:
    text = text.strip()
    if text in ("", "-", "{}", "[]"):
        return {}
    if text[0] in "{[":
        try:
            obj = _decode(text)
        except _DECODE_ERRORS:
            obj = None
        if obj is not None:
            return _labels_from_obj(obj)
    inner = text.strip("{}[]")
    sep = "|" if "|" in inner else ","
    items = []
    for part in inner.split(sep):
        part = part.strip().replace('"', "")
        if "=" not in part and ":" in part:
            part = part.replace(":", "=", 1)
        items.append(part.strip())
    return parse_label_list(items)


def _labels_from_obj(obj: Any) -> dict[str, str]:
    if obj is None:
        return {}
    if isinstance(obj, str):
        return _labels_from_text(obj)
    if isinstance(obj, list):
        return parse_label_list(obj)
    if isinstance(obj, dict):
        inner = obj.get("labels")
        if isinstance(inner, list):
            return parse_label_list(inner)
        if inner is None and "labels" not in obj:
            return {str(k): str(v) for k, v in obj.items() if isinstance(v, str | int | float)}
    return {}


def labels_from_any(raw: Any) -> dict[str, str]:
    """Labels from Calico's ``{"labels": ["k=v"]}``, a list, a map, ``-``, or one string.

    The string forms are Whisker's ``"k=v | k2=v2"`` and ``"k=v, k2=v2"``, and the text log's
    ``{"k":"v"}`` / ``{k=v,...}`` blobs. Results are cached by the raw value.
    """
    if raw is None:
        return {}
    if isinstance(raw, dict):
        inner = raw.get("labels")
        key: Hashable = ("L", tuple(inner)) if isinstance(inner, list) else None
    elif isinstance(raw, list):
        key = ("L", tuple(raw))
    elif isinstance(raw, str):
        key = raw
    else:
        return {}
    if key is not None:
        try:
            cached = _LABEL_CACHE.get(key)
        except TypeError:  # unhashable items inside the list
            return _labels_from_obj(raw)
        if cached is not None:
            return cached
    labels = _labels_from_obj(raw)
    if key is not None:
        if len(_LABEL_CACHE) >= _CACHE_LIMIT:
            _LABEL_CACHE.clear()
        _LABEL_CACHE[key] = labels
    return labels


_WORKLOAD_CACHE: dict[tuple[str | None, str | None, tuple[tuple[str, str], ...]], Any] = {}


def _workload(
    pod: str | None, labels: Mapping[str, str], prefix: str | None
) -> tuple[str | None, str | None]:
    key = (pod, prefix, tuple(labels.items()))
    hit = _WORKLOAD_CACHE.get(key)
    if hit is None:
        hit = infer_workload(pod, labels, prefix=prefix)
        if len(_WORKLOAD_CACHE) >= _CACHE_LIMIT:
            _WORKLOAD_CACHE.clear()
        _WORKLOAD_CACHE[key] = hit
    return hit


#: Endpoint type spellings of every Calico-family format -> canonical endpoint kind.
KIND_OF_TYPE: Final[dict[Any, str]] = {
    "wep": "workload",
    "workloadendpoint": "workload",
    1: "workload",
    "hep": "host",
    "hostendpoint": "host",
    2: "host",
    "ns": "external",
    "networkset": "external",
    3: "external",
    "net": "external",
    "network": "external",
    4: "external",
    "pub": "external",  # the old text log writes the network kind as the type
    "pvt": "external",
}
NETWORK_NAMES: Final = {
    "pub": "pub",
    "pvt": "pvt",
    "public network": "pub",  # Whisker shows Goldmane's pub/pvt under these names
    "private network": "pvt",
}


def endpoint_columns(
    prefix: str,
    type_raw: Any,
    namespace: str | None,
    pod: str | None,
    aggr: str | None,
    labels: dict[str, str],
) -> Row:
    """The canonical ``<prefix>_*`` columns of one Calico-family endpoint.

    ``pod`` is a full pod name when known, ``aggr`` the aggregated name (``nginx-86c57db685-*``,
    Goldmane's ``nginx-86c57db685-``, a host endpoint, NetworkSet, ``pub`` or ``pvt``).
    """
    values = endpoint_values(type_raw, namespace, pod, aggr, labels)
    return {f"{prefix}_{col}": value for col, value in zip(_ENDPOINT_COLUMNS, values, strict=True)}


#: The columns of :func:`endpoint_values`, in order (``<prefix>_`` left off).
_ENDPOINT_COLUMNS: Final = (
    "kind",
    "namespace",
    "workload",
    "workload_kind",
    "pod",
    "labels",
    "name",
)
#: One endpoint's columns: kind, namespace, workload, workload kind, pod, labels, name.
Endpoint = tuple[
    str, str | None, str | None, str | None, str | None, dict[str, str] | None, str | None
]


def endpoint_values(
    type_raw: Any,
    namespace: str | None,
    pod: str | None,
    aggr: str | None,
    labels: dict[str, str],
) -> Endpoint:
    """:func:`endpoint_columns` as a tuple in :data:`_ENDPOINT_COLUMNS` order."""
    if isinstance(type_raw, str):
        type_key: Any = type_raw.strip().lower()
        if type_key.isdigit():
            type_key = int(type_key)
    else:
        type_key = type_raw
    kind = KIND_OF_TYPE.get(type_key) if isinstance(type_key, str | int) else None
    name = aggr or pod
    network = NETWORK_NAMES.get(name.lower()) if name else None
    if type_key in ("pub", "pvt"):
        network = str(type_key)
    if kind is None:  # no or unknown type: infer from what is there
        if network:
            kind = "external"
        elif namespace and name:
            kind = "workload"
        else:
            kind = "unknown"
    workload = workload_kind = None
    if kind == "workload":
        workload, workload_kind = _workload(pod, labels, aggr)
    else:
        pod = None
        if network and kind == "external" and type_key not in ("ns", "networkset", 3):
            name = network
    return (kind, namespace, workload, workload_kind, pod, labels or None, name)


def strings_of(value: Any) -> list[str] | None:
    """A list of strings from a list or a comma-separated string (``-`` and empty: None)."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list):
        items = [v.strip() for v in value if isinstance(v, str)]
    else:
        return None
    items = [v for v in items if v and v != "-"]
    return items or None


# --------------------------------------------------------------------------------------------
# Merging the two reports of one connection
# --------------------------------------------------------------------------------------------

#: A canonical row as the merger and the batch builder take it: a tuple in
#: :data:`~recommender.ingest.schema.COLUMNS` order.
RowTuple = tuple[Any, ...]

_COL: Final = {name: i for i, name in enumerate(COLUMNS)}
_CONNECTIONS: Final = _COL["connections"]
_KEY_COLUMNS: Final = (
    "start_time",
    "protocol",
    "src_kind",
    "src_namespace",
    "src_name",
    "src_ip",
    "src_port",
    "dst_kind",
    "dst_namespace",
    "dst_name",
    "dst_ip",
    "dst_port",
)
_VERDICT_RANK: Final = {"denied": 3, "allowed": 2, "pass": 1}
_KEY_OF: Final = operator.itemgetter(*(_COL[c] for c in _KEY_COLUMNS))
#: Per endpoint: the labels column and the columns taken with it from the other report.
_LABEL_GROUPS: Final = tuple(
    (
        _COL[f"{p}_labels"],
        tuple(_COL[f"{p}_{c}"] for c in ("labels", "workload", "workload_kind", "pod")),
    )
    for p in ("src", "dst")
)
_START, _END = _COL["start_time"], _COL["end_time"]
_REPORTER, _VERDICT, _POLICIES = _COL["reporter"], _COL["verdict"], _COL["policies"]
_PACKETS, _BYTES, _NODE = _COL["packets"], _COL["bytes"], _COL["node"]
_OUTCOME = _COL["outcome"]
_SOURCE_FILE, _SOURCE_ROW = _COL["source_file"], _COL["source_row"]
#: The columns merge_reports fills from the dst report where the src report has none: not the
#: key columns (equal in both reports) nor those it sets itself.
_FILLED: Final = tuple(
    i
    for i, name in enumerate(COLUMNS)
    if name not in _KEY_COLUMNS
    and name
    not in (
        "end_time",
        "verdict",
        "outcome",
        "policies",
        "packets",
        "bytes",
        "connections",
        "reporter",
        "node",
        "source_file",
        "source_row",
    )
)

__all__ = [
    "Endpoint",
    "KIND_OF_TYPE",
    "MERGE_CAP",
    "MERGE_HORIZON_US",
    "NETWORK_NAMES",
    "ReportMerger",
    "Row",
    "RowTuple",
    "add_counts",
    "count_or_none",
    "counters_outcome",
    "endpoint_columns",
    "endpoint_values",
    "labels_from_any",
    "merge_key",
    "merge_reports",
    "micros_of",
    "policy_string_ok",
    "reporter_of",
    "row_tuple",
    "strings_of",
    "text_or_none",
    "verdict_of",
]

#: Sequence numbers of held reports stay below this (2**40: a trillion rows per reader).
_SEQ_SPAN: Final = 1 << 40


def row_tuple(row: Row) -> RowTuple:
    """A row given as a dict (missing keys are nulls, ``connections`` defaults to 1) as a tuple
    in column order."""
    values = tuple(row.get(name) for name in COLUMNS)
    if values[_CONNECTIONS] is None:
        values = (*values[:_CONNECTIONS], 1, *values[_CONNECTIONS + 1 :])
    return values


def merge_key(row: RowTuple) -> tuple[Any, ...]:
    """What identifies a connection in both ends' reports.

    ``end_time`` is not part of it: the two nodes flush on their own timers, so the two reports
    of one interval end a few seconds apart (see the real records in the tests).
    """
    key: tuple[Any, ...] = _KEY_OF(row)
    return key


#: A TCP segment without options or data over IPv4: what a bare reset (RST, RST-ACK) weighs.
#: A SYN-ACK carries options (Linux: at least MSS), so it is always heavier.
_BARE_TCP_BYTES: Final = 40
#: The ledger note of a record whose counters cannot tell the outcome.
MISSING_COUNTERS: Final = "missing-counters"
#: Row dicts may carry this key (not a column) with a ledger note about the outcome.
OUTCOME_NOTE: Final = "_outcome_note"
#: Row dicts may carry this key (not a column) naming the policy-trace field(s) of the staged
#: rollout that were malformed (comma-separated), for the ledger's ``malformed_traces``.
TRACE_NOTE: Final = "_trace_note"
#: The actions of a Calico policy string (``index|tier|name|action|rule``).
_TRACE_ACTIONS: Final = frozenset({"allow", "deny", "pass"})


def policy_string_ok(entry: Any) -> bool:
    """Whether ``entry`` is a policy string as Calico writes them:
    ``index|tier|namespace/name|action|rule`` with an integer index, a name, an action of
    allow, deny or pass, and an integer rule index (``-1``: the end of the tier) or ``-``.

    >>> policy_string_ok("0|default|shop/staged:default.allow-db|deny|-1")
    True
    >>> policy_string_ok("garbage"), policy_string_ok("x|t|n|allow|0"), policy_string_ok(3)
    (False, False, False)
    """
    if not isinstance(entry, str):
        return False
    parts = entry.split("|")
    if len(parts) != 5 or not parts[2] or parts[3] not in _TRACE_ACTIONS:
        return False
    return _is_int(parts[0]) and (parts[4] == "-" or _is_int(parts[4]))


def _is_int(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return digits.isdigit()


def counters_outcome(
    protocol: str,
    reporter: str | None,
    packets_in: int | None,
    packets_out: int | None,
    bytes_in: int | None,
    bytes_out: int | None,
) -> tuple[str, str | None]:
    """The connection outcome of a Calico or Goldmane record from its reporting end's counters:
    ``(outcome, ledger note or None)``.

    The answers are what reached the client: ``packets_in`` of a ``src`` report, what left the
    server: ``packets_out`` of a ``dst`` report. Any answer: ``established``, unless every
    answer of a TCP record was a bare 40-byte segment (resets: a SYN-ACK carries options).
    No answer to TCP requests: ``failed``. No answer over UDP or ICMP (one-way traffic is
    normal there), another reporter (``fwd``: a transit node) or a missing counter:
    ``unknown`` (the last with the note ``missing-counters``). ``num_flows_completed`` is not
    used: a refused connection completes as surely as a finished one.
    """
    if reporter == "src":
        answers, answer_bytes, requests = packets_in, bytes_in, packets_out
    elif reporter == "dst":
        answers, answer_bytes, requests = packets_out, bytes_out, packets_in
    else:
        return "unknown", None
    if answers is None or requests is None:
        return "unknown", MISSING_COUNTERS
    if answers > 0:
        if (
            protocol == "TCP"
            and answer_bytes is not None
            and answer_bytes <= _BARE_TCP_BYTES * answers
        ):
            return "failed", None
        return "established", None
    if protocol == "TCP" and requests > 0:
        return "failed", None
    return "unknown", None


#: When the two ends' reports of one connection disagree, the better outcome wins.
_OUTCOME_RANK: Final = {"established": 2, "failed": 1}


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def merge_reports(first: RowTuple, second: RowTuple) -> RowTuple:
    """One row from a ``src`` and a ``dst`` report of the same connection."""
    src, dst = (first, second) if first[_REPORTER] == "src" else (second, first)
    row = list(src)
    for labels, columns in _LABEL_GROUPS:
        if not src[labels] and dst[labels]:  # that end's labels, workload and pod from dst
            for col in columns:
                row[col] = dst[col]
    for i in _FILLED:  # what the src report lacks, from the dst report
        if row[i] is None:
            row[i] = dst[i]
    row[_START] = min(first[_START], second[_START])
    row[_END] = max(first[_END], second[_END])
    va, vb = first[_VERDICT], second[_VERDICT]
    row[_VERDICT] = va if _VERDICT_RANK.get(va, 0) >= _VERDICT_RANK.get(vb, 0) else vb
    policies = set(first[_POLICIES] or ()) | set(second[_POLICIES] or ())
    row[_POLICIES] = tuple(sorted(policies)) or None  # a tuple: see _frozen
    row[_PACKETS] = _max(first[_PACKETS], second[_PACKETS])
    row[_BYTES] = _max(first[_BYTES], second[_BYTES])
    row[_CONNECTIONS] = max(first[_CONNECTIONS] or 1, second[_CONNECTIONS] or 1)
    oa, ob = first[_OUTCOME], second[_OUTCOME]
    row[_OUTCOME] = oa if _OUTCOME_RANK.get(oa, 0) >= _OUTCOME_RANK.get(ob, 0) else ob
    row[_REPORTER] = "both"
    row[_NODE] = src[_NODE]
    row[_SOURCE_FILE] = first[_SOURCE_FILE]
    row[_SOURCE_ROW] = first[_SOURCE_ROW]
    return tuple(row)


class ReportMerger:
    """Folds the ``src`` and ``dst`` reports of one connection into one row, in bounded memory.

    Rows are tuples in :data:`~recommender.ingest.schema.COLUMNS` order (see :func:`row_tuple`).
    Unmatched ``src``/``dst`` rows are held back, keyed by :func:`merge_key`, and released as
    rows of their own when their end time falls ``horizon_us`` behind the newest start time seen,
    when more than ``cap`` are held (oldest first), or by :meth:`release_all`. Rows with another
    reporter (``fwd``, unknown) pass straight through. A second report with the *same* reporter
    and key is another connection (two nodes, say), so the held one is released and the new one
    held in its place.
    """

    def __init__(
        self,
        emit: Callable[[RowTuple], None],
        *,
        horizon_us: int = MERGE_HORIZON_US,
        cap: int = MERGE_CAP,
    ) -> None:
        self.emit = emit
        self.horizon_us = horizon_us
        self.cap = cap
        self.pending: dict[tuple[Any, ...], tuple[int, RowTuple]] = {}
        # (end_time * _SEQ_SPAN + seq, key): one int orders the heap as (end_time, seq) would.
        self._heap: list[tuple[int, tuple[Any, ...]]] = []
        self._seq = 0
        self._newest = -(1 << 62)

    def offer(self, row: RowTuple) -> bool:
        """Take one row; True when it was merged into a held report (a duplicate)."""
        start = row[_START]
        if start > self._newest:
            self._newest = start
            self._expire()
        reporter = row[_REPORTER]
        if reporter != "src" and reporter != "dst":
            self.emit(row)
            return False
        key = _KEY_OF(row)
        pending = self.pending
        held = pending.pop(key, None)
        if held is not None:
            if held[1][_REPORTER] != reporter:
                self.emit(merge_reports(held[1], row))
                return True
            self.emit(held[1])
        seq = self._seq = self._seq + 1
        pending[key] = (seq, row)
        heapq.heappush(self._heap, (row[_END] * _SEQ_SPAN + seq, key))
        if len(pending) > self.cap:
            oldest = next(iter(pending))
            self.emit(pending.pop(oldest)[1])
        return False

    def _expire(self) -> None:
        limit = (self._newest - self.horizon_us) * _SEQ_SPAN  # end_time < newest - horizon
        heap = self._heap
        while heap and heap[0][0] < limit:
            order, key = heapq.heappop(heap)
            held = self.pending.get(key)
            if held is not None and held[0] == order % _SEQ_SPAN:
                del self.pending[key]
                self.emit(held[1])
        if len(heap) > 2 * len(self.pending) + 4096:
            self._heap = [(r[_END] * _SEQ_SPAN + s, k) for k, (s, r) in self.pending.items()]
            heapq.heapify(self._heap)

    def release_all(self) -> None:
        """Emit every held row (at the end of the run)."""
        for _, row in self.pending.values():
            self.emit(row)
        self.pending.clear()
        self._heap.clear()
