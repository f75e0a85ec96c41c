"""Calico Enterprise / Calico Cloud flow logs: the Elasticsearch JSON and the space-delimited text.

:class:`CalicoReader` reads JSON lines on a fast path: a typed msgspec decode of the used
fields, caches for what repeats (endpoints, IPs, policies), rows built as tuples; any line that
is not a plain record takes the generic path of :class:`~._records.JsonRecordReader`, so every
skip reason is the same. :class:`CalicoTextReader` reads the text form. The two reports of one
connection are merged (:mod:`._flowlog`). See ``docs/formats/calico.md`` for the field mapping
and the quirks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
import pyarrow as pa

from ..errors import FlowFormatError
from ._common import (
    _MAX_US,
    _MIN_US,
    DEFAULT_BATCH_ROWS,
    BadValue,
    norm_ip,
    norm_port,
    norm_protocol,
    to_micros,
)
from ._flowlog import (
    _CACHE_LIMIT,
    _DECODE_ERRORS,
    _ENDPOINT_COLUMNS,
    _MAX_COUNT,
    _RECORD_ERRORS,
    _SHAPE_PROBE,
    OUTCOME_NOTE,
    TRACE_NOTE,
    Endpoint,
    Row,
    RowTuple,
    _decode,
    add_counts,
    count_or_none,
    counters_outcome,
    endpoint_values,
    labels_from_any,
    micros_of,
    policy_string_ok,
    reporter_of,
    strings_of,
    text_or_none,
    verdict_of,
)
from ._records import JsonRecordReader
from ._source import iter_line_chunks
from .schema import COLUMNS, PENDING_PREFIX

__all__ = ["CalicoReader", "CalicoTextReader"]

# --------------------------------------------------------------------------------------------
# Calico Enterprise JSON
# --------------------------------------------------------------------------------------------

_CALICO_ENDPOINT_KEYS: Final = (
    "source_type",
    "dest_type",
    "source_name_aggr",
    "dest_name_aggr",
    "source_ip",
    "dest_ip",
    "source_namespace",
    "dest_namespace",
)


def _calico_endpoint(rec: Mapping[str, Any], side: str, prefix: str) -> Row:
    values = _calico_endpoint_values(
        rec.get(f"{side}_type"),
        rec.get(f"{side}_namespace"),
        rec.get(f"{side}_name"),
        rec.get(f"{side}_name_aggr"),
        rec.get(f"{side}_labels"),
    )
    return {f"{prefix}_{col}": value for col, value in zip(_ENDPOINT_COLUMNS, values, strict=True)}


def _calico_endpoint_values(
    type_raw: Any, namespace_raw: Any, name_raw: Any, aggr_raw: Any, labels_raw: Any
) -> Endpoint:
    """One endpoint of a Calico record from its raw fields (``source_*`` or ``dest_*``)."""
    name = text_or_none(name_raw)
    aggr = text_or_none(aggr_raw)
    if name is not None and name.endswith("*"):  # the text log's prefix-aggregated name
        aggr, name = aggr or name, None
    if aggr == "*":  # aggregated by other means: no prefix known
        aggr = None
    return endpoint_values(
        type_raw, text_or_none(namespace_raw), name, aggr, labels_from_any(labels_raw)
    )


def _calico_policies(raw: Any) -> tuple[list[str] | None, str | None]:
    """The enforced trace (else all, else transit policies), then the pending (staged-inclusive)
    trace with each entry prefixed :data:`~recommender.ingest.schema.PENDING_PREFIX`: what the
    staged policies would have done (see docs/flow-schema.md); and ``"pending_policies"`` when
    the pending trace is malformed (not a list of policy strings, or an entry that is not one:
    :func:`~recommender.ingest._flowlog.policy_string_ok`), for the ledger, else None. The
    entries are kept as they are either way (a malformed last entry decides nothing)."""
    if isinstance(raw, list):  # the text log's policies column
        return strings_of(raw), None
    if not isinstance(raw, dict):
        return None, None
    out: list[str] = []
    for name in ("enforced_policies", "all_policies", "transit_policies"):
        value = raw.get(name)
        if value:
            out = strings_of(value) or []
            break
    pending = raw.get("pending_policies")
    note = None
    if pending is not None and pending != [] and pending != "-":
        entries = strings_of(pending) or []
        out += [PENDING_PREFIX + p for p in entries]
        if (
            not isinstance(pending, list | str)
            or (isinstance(pending, list) and len(entries) != len(pending))
            or not all(map(policy_string_ok, entries))
        ):
            note = "pending_policies"
    return out or None, note


def _calico_times(start_raw: Any, end_raw: Any, stamp: Any) -> tuple[int, int]:
    """``(start, end)`` in microseconds from a record's ``start_time``, ``end_time`` and
    ``@timestamp`` (used when neither of the others is there)."""
    start = micros_of(start_raw, "start_time")
    end = micros_of(end_raw, "end_time")
    if start is None and end is None:
        if stamp is None:
            raise BadValue("missing-time", "no start_time, end_time or @timestamp")
        if isinstance(stamp, str) and stamp.strip().isdigit():
            stamp = int(stamp)
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            stamp = stamp / 1000  # Elasticsearch epoch milliseconds
        start = end = to_micros(stamp, "@timestamp")
    elif start is None:
        start = end
    elif end is None:
        end = start
    assert start is not None and end is not None
    if end < start:
        start, end = end, start
    return start, end


def calico_row(rec: Mapping[str, Any], fmt: str, file: str, row_no: int) -> Row:
    """The canonical row of one Calico Enterprise flow-log record (JSON field names)."""
    start, end = _calico_times(rec.get("start_time"), rec.get("end_time"), rec.get("@timestamp"))
    protocol = norm_protocol(rec["proto"])
    policies, trace_note = _calico_policies(rec.get("policies"))
    row: Row = {
        "start_time": start,
        "end_time": end,
        **_calico_endpoint(rec, "source", "src"),
        **_calico_endpoint(rec, "dest", "dst"),
        "src_ip": _ip(rec.get("source_ip")),
        "dst_ip": _ip(rec.get("dest_ip")),
        "src_port": norm_port(rec.get("source_port"), "source_port"),
        "dst_port": None
        if protocol in ("ICMP", "ICMPv6")
        else norm_port(rec.get("dest_port"), "dest_port"),
        "protocol": protocol,
        "verdict": verdict_of(rec["action"]),
        "reporter": reporter_of(rec.get("reporter")),
        "policies": policies,
        "dst_service_namespace": text_or_none(rec.get("dest_service_namespace")),
        "dst_service_name": text_or_none(rec.get("dest_service_name")),
        "dst_service_port": text_or_none(rec.get("dest_service_port")),
        "dst_dns_names": strings_of(rec.get("dest_domains")),
        "node": text_or_none(rec.get("host")),
        "is_reply": False,
        "source_format": fmt,
        "source_file": file,
        "source_row": row_no,
    }
    counters = [
        count_or_none(rec.get(name), name)
        for name in ("packets_in", "packets_out", "bytes_in", "bytes_out")
    ]
    row["packets"] = add_counts(counters[0], counters[1])
    row["bytes"] = add_counts(counters[2], counters[3])
    row["outcome"], note = counters_outcome(protocol, row["reporter"], *counters)
    started = count_or_none(rec.get("num_flows_started"), "num_flows_started")
    flows = count_or_none(rec.get("num_flows"), "num_flows")
    row["connections"] = started if started else (flows if flows else 1)
    if note is not None:
        row[OUTCOME_NOTE] = note
    if trace_note is not None:
        row[TRACE_NOTE] = trace_note
    return row


def _ip(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise BadValue("invalid-ip", f"{value!r} is not an IP address")
    return norm_ip(value)


class CalicoReader(JsonRecordReader):
    """Calico Enterprise / Cloud flow logs as shipped to Elasticsearch (JSON).

    Accepts JSON lines, one JSON array of records, or an Elasticsearch search response
    (``hits.hits[]._source``). The ``src`` and ``dst`` reports of one connection become one row.
    """

    name = "calico"
    title = "a Calico Enterprise flow-log record"

    def looks_like(self, obj: Any) -> bool:
        return (
            isinstance(obj, dict)
            and "proto" in obj
            and "action" in obj
            and any(k in obj for k in _CALICO_ENDPOINT_KEYS)
        )

    def convert(self, rec: dict[str, Any], file: str, row: int) -> Row:
        return calico_row(rec, self.name, file, row)

    def __init__(self, ledger: Any, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        super().__init__(ledger, batch_rows=batch_rows)
        # Caches of the fast path. Keys are only strings, None and the bytes of raw JSON:
        # 1, 1.0 and True are equal as keys but give different results.
        self._endpoints: dict[tuple[Any, ...], Endpoint] = {}
        self._protocols: dict[str, str] = {}
        self._ips: dict[str, str] = {}
        self._tails: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._note: str | None = None  # the ledger note of the last _fast_row, if any
        self._trace: str | None = None  # its malformed pending trace, if any

    def _read_lines(self, file: str, first: int, lines: list[bytes]) -> None:
        """The fast path: each line decoded into a :class:`_CalicoRecord`, which reads only the
        fields used; a line that does not decode into one (malformed, not an object, missing
        ``proto``/``action``, a wrapper of records) or has none of the endpoint keys takes the
        generic path, which decides and reports exactly as for any other format."""
        ledger = self.ledger
        decode = _DECODE_RECORD
        offer = self.merger.offer
        row_of = self._fast_row
        generic = self._read_line
        for i, line in enumerate(lines):
            if not line or line.isspace():
                continue
            try:
                rec = decode(line)
            except Exception:  # whatever it is, the generic path reports it as it always has
                generic(file, first + i, line)
                continue
            if rec.items or rec.hits or (rec.source_type is None and _no_endpoint_key(rec)):
                generic(file, first + i, line)
                continue
            ledger.read += 1
            try:
                row = row_of(rec, file, first + i)
            except BadValue as exc:
                ledger.skip(file, first + i, exc.reason, str(exc))
                continue
            except _RECORD_ERRORS as exc:
                ledger.skip(file, first + i, "invalid-value", f"{type(exc).__name__}: {exc}")
                continue
            if offer(row):
                ledger.duplicate += 1
            else:
                ledger.used += 1
            if self._note is not None:
                ledger.unknown_outcome(self._note)
            if self._trace is not None:
                ledger.malformed_trace(self._trace)

    def _fast_row(self, r: _CalicoRecord, file: str, row_no: int) -> RowTuple:
        """:func:`calico_row` of a decoded record, as a tuple, with the same checks in the same
        order (so the same skip reason for a bad record). The usual values (ints, strings) are
        handled inline; repeated strings and raw JSON come from caches; anything else goes
        through the same helpers as :func:`calico_row`."""
        st, et = r.start_time, r.end_time
        if type(st) is int and type(et) is int:
            start, end = st * 1_000_000, et * 1_000_000
            if not (_MIN_US <= start <= _MAX_US and _MIN_US <= end <= _MAX_US):
                start, end = _calico_times(st, et, r.timestamp)
            elif end < start:
                start, end = end, start
        else:
            start, end = _calico_times(st, et, r.timestamp)
        value = r.proto
        protocol = self._protocols.get(value) if type(value) is str else None
        if protocol is None:
            protocol = norm_protocol(value)
            if type(value) is str:
                _remember(self._protocols, value, protocol)
        endpoint = self._endpoint
        s_kind, s_ns, s_wl, s_wk, s_pod, s_labels, s_name = endpoint(
            r.source_type,
            r.source_namespace,
            r.source_name,
            r.source_name_aggr,
            r.source_labels,
        )
        d_kind, d_ns, d_wl, d_wk, d_pod, d_labels, d_name = endpoint(
            r.dest_type, r.dest_namespace, r.dest_name, r.dest_name_aggr, r.dest_labels
        )
        ips = self._ips
        value = r.source_ip
        src_ip = ips.get(value) if type(value) is str else None
        if src_ip is None:
            src_ip = _ip(value)
            if src_ip is not None and type(value) is str:
                _remember(ips, value, src_ip)
        value = r.dest_ip
        dst_ip = ips.get(value) if type(value) is str else None
        if dst_ip is None:
            dst_ip = _ip(value)
            if dst_ip is not None and type(value) is str:
                _remember(ips, value, dst_ip)
        src_port = r.source_port
        if src_port is not None and not (type(src_port) is int and 0 <= src_port <= 65535):
            src_port = norm_port(src_port, "source_port")
        if protocol == "ICMP" or protocol == "ICMPv6":
            dst_port = None
        else:
            dst_port = r.dest_port
            if dst_port is not None and not (type(dst_port) is int and 0 <= dst_port <= 65535):
                dst_port = norm_port(dst_port, "dest_port")
        # verdict, reporter, policies, service, domains and node: one cache lookup when every
        # raw value is a string or null (they repeat together), else one by one
        action, rep, svc_ns, svc_name, svc_port, host = (
            r.action,
            r.reporter,
            r.dest_service_namespace,
            r.dest_service_name,
            r.dest_service_port,
            r.host,
        )
        policies_raw, domains_raw = bytes(r.policies), bytes(r.dest_domains)
        if (
            type(action) is str
            and type(rep) in _KEYABLE
            and type(svc_ns) in _KEYABLE
            and type(svc_name) in _KEYABLE
            and type(svc_port) in _KEYABLE
            and type(host) in _KEYABLE
        ):
            key = (action, rep, svc_ns, svc_name, svc_port, host, policies_raw, domains_raw)
            tail = self._tails.get(key)
            if tail is None:
                tail = _calico_tail(
                    action, rep, policies_raw, svc_ns, svc_name, svc_port, domains_raw, host
                )
                _remember(self._tails, key, tail)
        else:
            tail = _calico_tail(
                action, rep, policies_raw, svc_ns, svc_name, svc_port, domains_raw, host
            )
        verdict, reporter, policies, svc_ns, svc_name, svc_port, domains, node, trace = tail
        self._trace = trace
        p_in = r.packets_in
        if p_in is not None and not (type(p_in) is int and 0 <= p_in < _MAX_COUNT):
            p_in = count_or_none(p_in, "packets_in")
        p_out = r.packets_out
        if p_out is not None and not (type(p_out) is int and 0 <= p_out < _MAX_COUNT):
            p_out = count_or_none(p_out, "packets_out")
        b_in = r.bytes_in
        if b_in is not None and not (type(b_in) is int and 0 <= b_in < _MAX_COUNT):
            b_in = count_or_none(b_in, "bytes_in")
        b_out = r.bytes_out
        if b_out is not None and not (type(b_out) is int and 0 <= b_out < _MAX_COUNT):
            b_out = count_or_none(b_out, "bytes_out")
        started = r.num_flows_started
        if started is not None and not (type(started) is int and 0 <= started < _MAX_COUNT):
            started = count_or_none(started, "num_flows_started")
        flows = r.num_flows
        if flows is not None and not (type(flows) is int and 0 <= flows < _MAX_COUNT):
            flows = count_or_none(flows, "num_flows")
        outcome, self._note = counters_outcome(protocol, reporter, p_in, p_out, b_in, b_out)
        # Column order is recommender.ingest.schema.COLUMNS' (checked when this module is imported).
        return (
            start,
            end,
            s_kind,
            s_ns,
            s_wl,
            s_wk,
            s_pod,
            s_labels,
            src_ip,
            src_port,
            s_name,
            d_kind,
            d_ns,
            d_wl,
            d_wk,
            d_pod,
            d_labels,
            dst_ip,
            dst_port,
            d_name,
            protocol,
            None,
            None,
            svc_ns,
            svc_name,
            svc_port,
            domains,
            verdict,
            None,
            outcome,
            policies,
            reporter,
            None,
            None,
            node,
            False,
            started if started else (flows if flows else 1),
            None if p_in is None and p_out is None else (p_in or 0) + (p_out or 0),
            None if b_in is None and b_out is None else (b_in or 0) + (b_out or 0),
            None,
            None,
            None,
            None,
            None,
            self.name,
            file,
            row_no,
        )

    def _endpoint(
        self, type_raw: Any, namespace: Any, name: Any, aggr: Any, labels: msgspec.Raw
    ) -> Endpoint:
        """:func:`_calico_endpoint_values`, cached when every raw value is a string or null."""
        raw = bytes(labels)
        if (
            type(type_raw) in _KEYABLE
            and type(namespace) in _KEYABLE
            and type(name) in _KEYABLE
            and type(aggr) in _KEYABLE
        ):
            key = (type_raw, namespace, name, aggr, raw)
            hit = self._endpoints.get(key)
            if hit is None:
                hit = _calico_endpoint_values(
                    type_raw, namespace, name, aggr, _decode(raw) if raw else None
                )
                _remember(self._endpoints, key, hit)
            return hit
        return _calico_endpoint_values(
            type_raw, namespace, name, aggr, _decode(raw) if raw else None
        )


class _CalicoRecord(msgspec.Struct, gc=False):
    """The fields of a Calico Enterprise record that :func:`calico_row` reads.

    ``proto`` and ``action`` are required: a record without them is not one (``looks_like``).
    Values are ``Any`` so that every JSON value decodes (the checks are the generic path's);
    labels, policies and domains stay raw JSON, the key of their caches. ``items`` and ``hits``
    mark a wrapper of records, which the generic path unpacks.
    """

    proto: Any
    action: Any
    start_time: Any = None
    end_time: Any = None
    timestamp: Any = msgspec.field(default=None, name="@timestamp")
    source_type: Any = None
    source_namespace: Any = None
    source_name: Any = None
    source_name_aggr: Any = None
    source_labels: msgspec.Raw = msgspec.Raw(b"")
    source_ip: Any = None
    source_port: Any = None
    dest_type: Any = None
    dest_namespace: Any = None
    dest_name: Any = None
    dest_name_aggr: Any = None
    dest_labels: msgspec.Raw = msgspec.Raw(b"")
    dest_ip: Any = None
    dest_port: Any = None
    dest_service_namespace: Any = None
    dest_service_name: Any = None
    dest_service_port: Any = None
    dest_domains: msgspec.Raw = msgspec.Raw(b"")
    reporter: Any = None
    policies: msgspec.Raw = msgspec.Raw(b"")
    host: Any = None
    packets_in: Any = None
    packets_out: Any = None
    bytes_in: Any = None
    bytes_out: Any = None
    num_flows: Any = None
    num_flows_started: Any = None
    items: msgspec.Raw = msgspec.Raw(b"")
    hits: msgspec.Raw = msgspec.Raw(b"")


_DECODE_RECORD: Final = msgspec.json.Decoder(_CalicoRecord).decode
_KEYABLE: Final = frozenset({str, type(None)})
_MISSING: Final = object()


def _no_endpoint_key(r: _CalicoRecord) -> bool:
    """True when none of :data:`_CALICO_ENDPOINT_KEYS` is in the record (or all are null, which
    the generic path then tells apart)."""
    return (
        r.source_type is None
        and r.dest_type is None
        and r.source_name_aggr is None
        and r.dest_name_aggr is None
        and r.source_ip is None
        and r.dest_ip is None
        and r.source_namespace is None
        and r.dest_namespace is None
    )


def _calico_tail(
    action: Any,
    reporter: Any,
    policies: bytes,
    svc_ns: Any,
    svc_name: Any,
    svc_port: Any,
    domains: bytes,
    host: Any,
) -> tuple[Any, ...]:
    """Verdict, reporter, policies, service namespace, name and port, domains and node, in
    :func:`calico_row`'s order (policies and domains from their raw JSON, as tuples), then the
    ledger note of a malformed pending trace (or None)."""
    trace, trace_note = _calico_policies(_decode(policies) if policies else None)
    return (
        verdict_of(action),
        reporter_of(reporter),
        _frozen(trace),
        text_or_none(svc_ns),
        text_or_none(svc_name),
        text_or_none(svc_port),
        _frozen(strings_of(_decode(domains) if domains else None)),
        text_or_none(host),
        trace_note,
    )


def _frozen(values: list[str] | None) -> tuple[str, ...] | None:
    """A list column's value as a tuple: a row of strings, ints and tuples of strings (label
    dicts of strings are untracked too) leaves the garbage collector's tracking, which would
    otherwise walk every row waiting in the batch builder on each full collection."""
    return tuple(values) if values is not None else None


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


_FAST_LAYOUT: Final = (
    "start_time",
    "end_time",
    "src_kind",
    "src_namespace",
    "src_workload",
    "src_workload_kind",
    "src_pod",
    "src_labels",
    "src_ip",
    "src_port",
    "src_name",
    "dst_kind",
    "dst_namespace",
    "dst_workload",
    "dst_workload_kind",
    "dst_pod",
    "dst_labels",
    "dst_ip",
    "dst_port",
    "dst_name",
    "protocol",
    "icmp_type",
    "icmp_code",
    "dst_service_namespace",
    "dst_service_name",
    "dst_service_port",
    "dst_dns_names",
    "verdict",
    "drop_reason",
    "outcome",
    "policies",
    "reporter",
    "traffic_direction",
    "observation_point",
    "node",
    "is_reply",
    "connections",
    "packets",
    "bytes",
    "l7_protocol",
    "http_method",
    "http_path",
    "http_code",
    "dns_query",
    "source_format",
    "source_file",
    "source_row",
)
if tuple(COLUMNS) != _FAST_LAYOUT:  # CalicoReader._fast_row writes rows in this order
    raise ImportError("recommender.ingest.schema.COLUMNS changed: update CalicoReader._fast_row")


# --------------------------------------------------------------------------------------------
# Calico Enterprise space-delimited text
# --------------------------------------------------------------------------------------------

_TEXT_TYPES: Final = frozenset({"wep", "hep", "ns", "net", "pub", "pvt"})
_TEXT_FIELDS: Final = (
    "src_ip",
    "dst_ip",
    "proto",
    "source_port",
    "dest_port",
    "num_flows",
    "num_flows_started",
    "num_flows_completed",
    "reporter",
    "packets_in",
    "packets_out",
    "bytes_in",
    "bytes_out",
    "action",
)


def _text_tokens(line: str) -> list[str]:
    """Whitespace-separated fields, keeping ``{...}``/``[...]`` blobs with spaces together."""
    tokens: list[str] = []
    depth = 0
    for part in line.split():
        if depth > 0:
            tokens[-1] += " " + part
        else:
            tokens.append(part)
        if depth > 0 or part[0] in "{[":
            depth += part.count("{") + part.count("[") - part.count("}") - part.count("]")
            depth = max(depth, 0)
    return tokens


def text_record(line: str) -> dict[str, Any] | None:
    """A Calico JSON-style record from one text-log line, or None when it is not one.

    Two layouts: the documented 24 fields (``... srcName srcLabels dstType ...``) and the newer
    one with ``srcNameAggr``/``dstNameAggr`` after each name; extra trailing fields (policies,
    original source IPs, services, processes) are read when present.
    """
    parts = _text_tokens(line)
    if len(parts) < 24:
        return None
    if parts[6] in _TEXT_TYPES:
        aggr = False
    elif len(parts) >= 26 and parts[7] in _TEXT_TYPES:
        aggr = True
    else:
        return None
    rec: dict[str, Any] = {"start_time": parts[0], "end_time": parts[1]}
    i = 2
    for side in ("source", "dest"):
        rec[f"{side}_type"] = parts[i]
        rec[f"{side}_namespace"] = parts[i + 1]
        rec[f"{side}_name"] = parts[i + 2]
        if aggr:
            rec[f"{side}_name_aggr"] = parts[i + 3]
            i += 1
        rec[f"{side}_labels"] = parts[i + 3]
        i += 4
    for offset, name in enumerate(_TEXT_FIELDS):
        rec[name] = parts[i + offset]
    rec["source_ip"], rec["dest_ip"] = rec.pop("src_ip"), rec.pop("dst_ip")
    rest = parts[i + len(_TEXT_FIELDS) :]
    if rest and rest[0].startswith("["):
        with contextlib.suppress(*_DECODE_ERRORS):
            rec["policies"] = _decode(rest[0])
    if len(rest) >= 6:
        rec["dest_service_namespace"], rec["dest_service_name"] = rest[3], rest[4]
        rec["dest_service_port"] = rest[5]
    return rec


class CalicoTextReader(JsonRecordReader):
    """Calico Enterprise flow logs in the space-delimited text form (file or syslog output).

    ``proto`` is numeric, ``reporter`` is ``out`` (source) or ``in`` (destination), ``-`` marks
    a field that is not logged or aggregated and a trailing ``*`` an aggregated name prefix.
    """

    name = "calico-text"
    title = "a Calico Enterprise text flow-log line"

    def looks_like(self, obj: Any) -> bool:
        return isinstance(obj, dict)

    def convert(self, rec: dict[str, Any], file: str, row: int) -> Row:
        return calico_row(rec, self.name, file, row)

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        file = str(path)
        self._check_text_shape(path)
        for first, lines, error in iter_line_chunks(path):
            for i, raw in enumerate(lines):
                line = raw.decode("utf-8", errors="replace").strip()
                if not line or line.startswith("#"):
                    continue
                rec = text_record(line)
                if rec is None:
                    self.ledger.read += 1
                    self.ledger.skip(
                        file, first + i, "unknown-shape", "not 24 space-delimited fields"
                    )
                    continue
                self._record(rec, file, first + i)
                yield from self._drain()
            if error:
                self.ledger.read += 1
                self.ledger.skip(file, first + len(lines), "truncated-file", error)

    def _check_text_shape(self, path: Path) -> None:
        seen = 0
        for _, lines, _ in iter_line_chunks(path, chunk_bytes=65536):
            for raw in lines:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line or line.startswith("#"):
                    continue
                if text_record(line) is not None:
                    return
                seen += 1
                if seen >= _SHAPE_PROBE:
                    break
            break
        if seen:
            raise FlowFormatError(
                f"{path}: none of the first lines is a Calico text flow log "
                "(24 space-delimited fields); check the file or name its format with --format."
            )
