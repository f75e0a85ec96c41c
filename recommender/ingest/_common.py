"""Helpers shared by the readers: row batches, addresses, protocols, labels and workloads."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import pyarrow as pa

from .schema import COLUMNS, FLOW_SCHEMA

try:  # the compiled helpers of the Hubble reader's scanner (optional; see setup.py)
    from ._hubble_scan import arrow_buffers as _scan_buffers
    from ._hubble_scan import columns as _scan_columns
    from ._hubble_scan import unique_objects as _scan_unique
except ImportError:  # pragma: no cover - depends on the build
    _scan_buffers = _scan_columns = _scan_unique = None  # type: ignore[assignment]

__all__ = [
    "BatchBuilder",
    "infer_workload",
    "norm_ip",
    "norm_protocol",
    "parse_label_list",
    "to_micros",
]

DEFAULT_BATCH_ROWS: Final = 65536

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Times before 2000 or after 2100 are impossible for a flow log: a unit mix-up, most likely.
_MIN_US: Final = 946_684_800 * 1_000_000
_MAX_US: Final = 4_102_444_800 * 1_000_000


class BadValue(ValueError):
    """A field holds an impossible value; ``reason`` is the ledger key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def to_micros(value: Any, field: str = "time") -> int:
    """Microseconds since the epoch (UTC) from a datetime, Unix seconds, or an RFC 3339 string."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        us = (dt - _EPOCH) // _ONE_US
    elif isinstance(value, bool) or value is None:
        raise BadValue("invalid-time", f"{field} is {value!r}")
    elif isinstance(value, int | float):
        us = int(value * 1_000_000)
    elif isinstance(value, str):
        try:
            us = int(float(value) * 1_000_000)
        except ValueError:
            try:
                us = to_micros(datetime.fromisoformat(_trim_fraction(value)), field)
            except ValueError:
                raise BadValue("invalid-time", f"{field} is {value!r}") from None
    else:
        raise BadValue("invalid-time", f"{field} is {value!r}")
    if not _MIN_US <= us <= _MAX_US:
        raise BadValue("invalid-time", f"{field} {value!r} is outside 2000-2100")
    return us


_ONE_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _trim_fraction(text: str) -> str:
    return _FRACTION.sub(r"\1", text.replace("z", "Z"))


_IP_CACHE: dict[str, str] = {}


def norm_ip(value: Any) -> str | None:
    """The canonical text of an IPv4 or IPv6 address; None for empty values.

    Raises
    ------
    BadValue
        When ``value`` is not an IP address.
    """
    if value is None or value == "" or value == "-":
        return None
    cached = _IP_CACHE.get(value) if isinstance(value, str) else None
    if cached is not None:
        return cached
    try:
        text = str(ipaddress.ip_address(value))
    except ValueError:
        raise BadValue("invalid-ip", f"{value!r} is not an IP address") from None
    if len(_IP_CACHE) < 1_000_000:
        _IP_CACHE[value] = text
    return text


def norm_port(value: Any, field: str = "port") -> int | None:
    """A port number 0-65535, or None when absent."""
    if value is None or value == "" or value == "-":
        return None
    if isinstance(value, bool):
        raise BadValue("invalid-port", f"{field} is {value!r}")
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise BadValue("invalid-port", f"{field} is {value!r}") from None
    if not 0 <= port <= 65535:
        raise BadValue("invalid-port", f"{field} {port} is outside 0-65535")
    return port


_PROTOCOLS: Final = {
    "tcp": "TCP",
    "6": "TCP",
    "udp": "UDP",
    "17": "UDP",
    "sctp": "SCTP",
    "132": "SCTP",
    "icmp": "ICMP",
    "icmpv4": "ICMP",
    "1": "ICMP",
    "icmpv6": "ICMPv6",
    "icmp6": "ICMPv6",
    "58": "ICMPv6",
}


def norm_protocol(value: Any) -> str:
    """``TCP``, ``UDP``, ``SCTP``, ``ICMP`` or ``ICMPv6`` from a name or an IANA number."""
    proto = _PROTOCOLS.get(str(value).strip().lower())
    if proto is None:
        raise BadValue("invalid-protocol", f"protocol {value!r} is not TCP, UDP, SCTP or ICMP")
    return proto


def parse_label_list(items: Iterable[Any]) -> dict[str, str]:
    """``{"k": "v"}`` from ``["k=v", ...]`` (a bare key maps to the empty string)."""
    labels: dict[str, str] = {}
    for item in items:
        if not isinstance(item, str):
            continue
        key, _, value = item.partition("=")
        if key:
            labels[key] = value
    return labels


# Pod names made by controllers. Kubernetes draws generated suffixes from this alphabet
# (k8s.io/apimachinery rand.SafeEncodeString: no vowels, no 0, 1 or 3).
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOYMENT_POD = re.compile(rf"^(?P<name>.+)-(?P<hash>{_SAFE}{{6,10}})-{_SAFE}{{5}}$")
_DEPLOYMENT_PREFIX = re.compile(rf"^(?P<name>.+)-(?P<hash>{_SAFE}{{6,10}})-\*?$")
_CRONJOB_JOB = re.compile(r"^(?P<name>.+)-\d{8,10}$")
_GENERATED_POD = re.compile(rf"^(?P<name>.+)-{_SAFE}{{5}}$")
_ORDINAL_POD = re.compile(r"^(?P<name>.+)-\d+$")


def infer_workload(
    pod: str | None, labels: Mapping[str, str] | None, prefix: str | None = None
) -> tuple[str | None, str | None]:
    """Guess a pod's owning workload as ``(name, kind)`` from its name and labels.

    Labels decide first (``pod-template-hash`` for Deployments, ``job-name``, the StatefulSet and
    DaemonSet hashes); then the shape of the pod name or of an aggregated name prefix (Calico's
    ``nginx-86c57db685-*``, Goldmane's ``nginx-86c57db685-``). When only a prefix is known the
    kind is ``prefix``; with neither pod nor prefix the result is ``(None, None)``.
    """
    labels = labels or {}
    job = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")
    if job:
        cron = _CRONJOB_JOB.match(job)
        return (cron["name"], "CronJob") if cron else (job, "Job")
    name = pod or (prefix.rstrip("*") if prefix else None)
    if not name:
        return None, None
    template = labels.get("pod-template-hash")
    if template and f"-{template}-" in name + "-":
        return name.split(f"-{template}-", 1)[0] or name, "Deployment"
    if "statefulset.kubernetes.io/pod-name" in labels or (
        "controller-revision-hash" in labels and "pod-template-generation" not in labels
    ):
        ordinal = _ORDINAL_POD.match(name.rstrip("-"))
        if ordinal:
            return ordinal["name"], "StatefulSet"
    if "pod-template-generation" in labels:
        gen = _GENERATED_POD.match(name)
        return (gen["name"] if gen else name.rstrip("-")), "DaemonSet"
    if pod:
        dep = _DEPLOYMENT_POD.match(pod)
        if dep:
            return dep["name"], "Deployment"
        gen = _GENERATED_POD.match(pod)
        if gen:
            return gen["name"], "prefix"
        ordinal = _ORDINAL_POD.match(pod)
        if ordinal:  # name-N: a StatefulSet's pod (Cilium drops the StatefulSet labels)
            return ordinal["name"], "StatefulSet"
        return pod, "Pod"
    assert prefix is not None
    dep = _DEPLOYMENT_PREFIX.match(prefix)
    if dep:
        return dep["name"], "Deployment"
    return prefix.rstrip("*").rstrip("-") or prefix, "prefix"


class BatchBuilder:
    """Collects canonical rows into Arrow record batches.

    :meth:`add` takes a dict keyed by column name (missing keys are nulls; ``connections``
    defaults to 1); :meth:`add_tuple` takes a tuple in :data:`~recommender.ingest.schema.COLUMNS`
    order, for readers on a hot path. Times are int microseconds since the epoch.
    """

    def __init__(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        self.batch_rows = batch_rows
        self.rows: list[Sequence[Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        """Append one row given as a dict."""
        values = tuple(row.get(name) for name in COLUMNS)
        if values[_CONNECTIONS] is None:
            values = (*values[:_CONNECTIONS], 1, *values[_CONNECTIONS + 1 :])
        self.rows.append(values)

    def add_tuple(self, row: tuple[Any, ...]) -> None:
        """Append one row given in column order."""
        self.rows.append(row)

    @property
    def full(self) -> bool:
        """True when a batch's worth of rows is waiting."""
        return len(self.rows) >= self.batch_rows

    def flush(self) -> pa.RecordBatch | None:
        """The waiting rows as one record batch (None when there are none)."""
        if not self.rows:
            return None
        rows, self.rows = self.rows, []
        n = len(rows)
        arrays = []
        for values, field in zip(_columns(rows), FLOW_SCHEMA, strict=True):
            if values is None:
                arrays.append(pa.nulls(n, field.type))
            elif (array := _compiled_array(values, field.type)) is not None:
                arrays.append(array)
            elif field.name in ("start_time", "end_time"):
                arrays.append(pa.array(values, type=pa.int64()).cast(field.type))
            elif pa.types.is_map(field.type) or pa.types.is_list(field.type):
                arrays.append(_shared_objects_array(values, field.type))
            else:
                arrays.append(pa.array(values, type=field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA)


_CONNECTIONS: Final = COLUMNS.index("connections")


#: Set (to anything but 0 or empty) to read without the compiled scanner and its helpers.
NO_SCANNER_ENV: Final = "RECOMMENDER_NO_SCANNER"


def _compiled() -> bool:
    """Whether the compiled scanner (``_hubble_scan``) is there and not switched off with the
    ``RECOMMENDER_NO_SCANNER`` environment variable."""
    return _scan_columns is not None and os.environ.get(NO_SCANNER_ENV, "") in ("", "0")


def _columns(rows: list[Sequence[Any]]) -> list[Sequence[Any] | None]:
    """The columns of ``rows`` (None for a column of only None), by the compiled scanner's
    ``columns`` when it is there: it reads the rows one after the other, ``zip(*rows)`` reads
    them column by column, a cache miss per value (a second per 100,000 rows)."""
    if _compiled():
        return _scan_columns(rows, len(COLUMNS))
    n = len(rows)
    return [None if col.count(None) == n else col for col in zip(*rows, strict=True)]


#: Arrow types whose arrays the compiled scanner's ``arrow_buffers`` builds: the byte width of
#: their values (0: utf8 text with int32 offsets).
_WIDTHS: Final = {
    pa.string(): 0,
    pa.int16(): 2,
    pa.int32(): 4,
    pa.int64(): 8,
    pa.timestamp("us", tz="UTC"): 8,
}


def _compiled_array(values: Sequence[Any], type_: pa.DataType) -> pa.Array | None:
    """The Arrow array of a column of str, int or None values built from buffers in C (pyarrow's
    conversion of Python objects takes two to four times as long); None when the compiled
    scanner is absent or declines the values (pyarrow then converts them, and reports what is
    wrong with them)."""
    width = _WIDTHS.get(type_)
    if width is None or not isinstance(values, list) or not _compiled():
        return None
    built = _scan_buffers(values, width)
    if built is None:
        return None
    validity, offsets, data, nulls = built
    buffers = [pa.py_buffer(validity) if validity is not None else None]
    if offsets is not None:
        buffers.append(pa.py_buffer(offsets))
    buffers.append(pa.py_buffer(data))
    return pa.Array.from_buffers(type_, len(values), buffers, null_count=nulls)


def _shared_objects_array(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """An Arrow array of nested values that repeat as the same Python objects (label maps of
    one endpoint): each distinct object is converted once, then taken by index."""
    if _compiled() and isinstance(values, list):
        distinct, spots = _scan_unique(values)
        if len(distinct) * 2 > len(values):
            return pa.array(values, type=type_)
        where = pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(spots)])
        return pa.array(distinct, type=type_).take(where)
    index: dict[int, int] = {}
    uniques: list[Any] = []
    positions = []
    for value in values:
        key = id(value)
        at = index.get(key)
        if at is None:
            at = index[key] = len(uniques)
            uniques.append(value)
        positions.append(at)
    if len(uniques) * 2 > len(values):
        return pa.array(values, type=type_)
    return pa.array(uniques, type=type_).take(pa.array(positions, type=pa.int32()))
