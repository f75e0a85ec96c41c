"""Cilium Hubble flows: ``hubble observe -o json|jsonpb`` lines, exporter files, bare Flow objects.

Hubble writes one event per packet or observation point, not one per connection. This reader
keeps one row per connection initiation:

- reply-direction events are dropped (``is_reply: true``, the legacy ``reply: true``, and, when
  neither is present, a TCP SYN+ACK, an ICMP echo reply, or a packet from a non-ephemeral port to
  an ephemeral one; see :func:`infer_reply`);
- the other events of a connection (more packets, other observation points, the other node) are
  merged by 5-tuple while the connection is active (idle gap below ``idle_seconds``);
- an L7 request on a known connection adds a row with ``connections = 0``: it carries the HTTP
  or DNS detail without counting the connection twice.

Endpoints with a pod name and namespace are workloads even when labelled ``reserved:world``
(Hubble's L7 proxy sometimes loses the identity but keeps the pod).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
import pyarrow as pa

try:  # the compiled hot loop; without it the same rows come from the pure-Python path
    from . import _hubble_scan as _scan
except ImportError:  # pragma: no cover - depends on the build
    _scan = None  # type: ignore[assignment]

from ..errors import FlowFormatError
from ._base import FlowReader
from ._common import (
    _EPOCH,
    _IP_CACHE,
    _ONE_US,
    BadValue,
    _compiled,
    infer_workload,
    norm_ip,
    to_micros,
)
from ._common import NO_SCANNER_ENV as NO_SCANNER_ENV
from ._source import (
    CHUNK_BYTES,
    is_stream,
    iter_line_chunks,
    open_decompressed,
    read_head,
    stream_error,
)
from .schema import COLUMNS

__all__ = ["HubbleReader", "infer_reply", "tcp_flag_bits"]


class _Flags(msgspec.Struct, gc=False):
    SYN: bool = False
    ACK: bool = False
    FIN: bool = False
    RST: bool = False


class _Ports(msgspec.Struct, gc=False):
    source_port: int = 0
    destination_port: int = 0
    # Any JSON: a malformed flags object makes the outcome unknown (counted in the ledger),
    # it does not cost the event (see tcp_flag_bits).
    flags: Any = None


class _Icmp(msgspec.Struct, gc=False):
    type: int = 0
    code: int = 0


class _L4(msgspec.Struct, gc=False):
    TCP: _Ports | None = None
    UDP: _Ports | None = None
    SCTP: _Ports | None = None
    ICMPv4: _Icmp | None = None
    ICMPv6: _Icmp | None = None


class _IP(msgspec.Struct, gc=False):
    source: str = ""
    destination: str = ""


class _Workload(msgspec.Struct, gc=False):
    name: str = ""
    kind: str = ""


class _Endpoint(msgspec.Struct, gc=False):
    identity: int = 0
    namespace: str = ""
    labels: list[str] = []
    pod_name: str = ""
    workloads: list[_Workload] = []


class _Service(msgspec.Struct, gc=False):
    name: str = ""
    namespace: str = ""


class _Policy(msgspec.Struct, gc=False):
    name: str = ""
    namespace: str = ""
    kind: str = ""


class _Http(msgspec.Struct, gc=False):
    code: int = 0
    method: str = ""
    url: str = ""


class _Dns(msgspec.Struct, gc=False):
    query: str = ""


class _L7(msgspec.Struct, gc=False):
    type: str | int = ""
    http: _Http | None = None
    dns: _Dns | None = None
    kafka: dict[str, Any] | None = None


class _Flow(msgspec.Struct, gc=False):
    time: datetime | None = None
    verdict: str | int = ""
    drop_reason_desc: str | int = ""
    IP: _IP | None = None
    l4: _L4 | None = None
    # Endpoints stay raw JSON until a row is kept: most events are replies or duplicates,
    # and the raw bytes are the key of the endpoint cache.
    source: msgspec.Raw = msgspec.Raw(b"")
    destination: msgspec.Raw = msgspec.Raw(b"")
    Type: str | int = ""
    node_name: str = ""
    destination_names: list[str] = []
    l7: _L7 | None = None
    is_reply: bool | None = None
    reply: bool = False
    traffic_direction: str | int = ""
    trace_observation_point: str | int = ""
    destination_service: _Service | None = None
    # Set on drops and on AUDIT verdicts (policy audit mode): the policies that denied (would
    # deny) the flow, and how the policy matched. Raw JSON, read only for a denied or audited
    # flow (:func:`_denied_by`), so that a malformed trace is counted, not the flow lost.
    ingress_denied_by: msgspec.Raw = msgspec.Raw(b"")
    egress_denied_by: msgspec.Raw = msgspec.Raw(b"")
    policy_match_type: msgspec.Raw = msgspec.Raw(b"")


_RAW_LIST: Final = msgspec.json.Decoder(list[msgspec.Raw] | None)
_POLICY: Final = msgspec.json.Decoder(_Policy)
_MATCH_TYPE: Final = msgspec.json.Decoder(int | str | None)
_TRACE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                        RecursionError)  # fmt: skip


def _denied_by(f: _Flow) -> tuple[list[str] | None, str | None]:
    """The ``policies`` of a denied or audited flow: ``denied-by:<direction>|<kind>|<ns/name>``
    per policy Hubble names, and ``policy-match:<type>`` when it says how the policy matched;
    and the malformed fields (comma-separated, for the ledger's ``malformed_traces``) or None.
    A malformed field gives what could be read of it: the well-formed policies of a list."""
    out: list[str] = []
    bad: list[str] = []
    for direction, raw in (("ingress", f.ingress_denied_by), ("egress", f.egress_denied_by)):
        if not raw:
            continue
        try:
            items = _RAW_LIST.decode(raw) or []
        except _TRACE_ERRORS:
            bad.append(f"{direction}_denied_by")
            continue
        broken = False
        for item in items:
            try:
                p = _POLICY.decode(item)
            except _TRACE_ERRORS:
                broken = True
                continue
            if p.name:
                out.append(
                    f"denied-by:{direction}|{p.kind}|"
                    f"{p.namespace + '/' if p.namespace else ''}{p.name}"
                )
        if broken:
            bad.append(f"{direction}_denied_by")
    if f.policy_match_type:
        try:
            match = _MATCH_TYPE.decode(f.policy_match_type)
        except _TRACE_ERRORS:
            bad.append("policy_match_type")
        else:
            if match:
                out.append(f"policy-match:{match}")
    return out or None, ",".join(bad) or None


class _Line(msgspec.Struct, gc=False):
    flow: _Flow | None = None
    node_name: str = ""
    time: datetime | None = None
    # A bare Flow object has these at the top level instead of under "flow".
    IP: _IP | None = None
    verdict: str | int = ""


_VERDICTS: Final = {
    "FORWARDED": "allowed",
    "DROPPED": "denied",
    "AUDIT": "audit",
    "REDIRECTED": "redirected",
    "TRACED": "traced",
    "TRANSLATED": "translated",
    "ERROR": "error",
    "VERDICT_UNKNOWN": "unknown",
    1: "allowed",
    2: "denied",
    3: "error",
    4: "audit",
    5: "redirected",
    6: "traced",
    7: "translated",
    0: "unknown",
}
_DIRECTIONS: Final = {"INGRESS": "ingress", "EGRESS": "egress", 1: "ingress", 2: "egress"}

# Reserved identities by label and by number (cilium pkg/identity/numericidentity.go).
_RESERVED: Final = {
    "reserved:host": ("host", "host"),
    "reserved:remote-node": ("remote-node", "remote-node"),
    "reserved:kube-apiserver": ("cluster-entity", "kube-apiserver"),
    "reserved:health": ("cluster-entity", "health"),
    "reserved:init": ("cluster-entity", "init"),
    "reserved:unmanaged": ("cluster-entity", "unmanaged"),
    "reserved:ingress": ("cluster-entity", "ingress"),
    "reserved:world": ("external", "world"),
    "reserved:world-ipv4": ("external", "world"),
    "reserved:world-ipv6": ("external", "world"),
}
_RESERVED_IDS: Final = {
    1: ("host", "host"),
    2: ("external", "world"),
    3: ("cluster-entity", "unmanaged"),
    4: ("cluster-entity", "health"),
    5: ("cluster-entity", "init"),
    6: ("remote-node", "remote-node"),
    7: ("cluster-entity", "kube-apiserver"),
    8: ("cluster-entity", "ingress"),
    9: ("external", "world"),
    10: ("external", "world"),
}
# kube-apiserver wins over host/remote-node when a node runs the API server.
_RESERVED_ORDER: Final = ("reserved:kube-apiserver",)

_EPHEMERAL_LOW: Final = 32768
_MAX_ARRAY_BYTES: Final = 512 << 20
_VERDICT_AT: Final = COLUMNS.index("verdict")
# A later event of a connection overrides the verdict kept when it ranks higher.
_RANK: Final = {"denied": 3, "audit": 2}
_OVERRIDING: Final = frozenset(_RANK)
_ICMP_REPLIES: Final = {
    ("ICMP", 0),
    ("ICMP", 14),
    ("ICMP", 16),
    ("ICMP", 18),
    ("ICMPv6", 129),
    ("ICMPv6", 130),
}
_ICMP_REQUESTS: Final = {
    ("ICMP", 8),
    ("ICMP", 13),
    ("ICMP", 15),
    ("ICMP", 17),
    ("ICMPv6", 128),
    ("ICMPv6", 133),
    ("ICMPv6", 135),
}


#: TCP flag bits of :func:`tcp_flag_bits`.
_SYN: Final = 1
_ACK: Final = 2
_FIN: Final = 4
_RST: Final = 8
_FLAG_BITS: Final = (("SYN", _SYN), ("ACK", _ACK), ("FIN", _FIN), ("RST", _RST))
#: What tcp_flag_bits gives without flags, and for malformed or impossible ones.
_NO_FLAGS: Final = -1
_MALFORMED_FLAGS: Final = -2
_IMPOSSIBLE_FLAGS: Final = -3
#: A SYN sent again at least this long (us) after the first one, with no answer from the peer
#: in between, is a retransmission: the connection failed (Linux retries after 1 s).
_RETRY_US: Final = 900_000
_OUTCOME_AT: Final = COLUMNS.index("outcome")
_POLICIES_AT: Final = COLUMNS.index("policies")
_FILE_AT: Final = COLUMNS.index("source_file")


def _event_micros(when: datetime) -> int:
    """Microseconds since the epoch of an event time (naive: UTC), never raising."""
    return ((when if when.tzinfo else when.replace(tzinfo=UTC)) - _EPOCH) // _ONE_US


def tcp_flag_bits(flags: Any) -> int:
    """The SYN, ACK, FIN and RST bits (1, 2, 4, 8) of a Hubble ``l4.TCP.flags`` object.

    ``-1`` without flags (absent or null), ``-2`` when malformed (not an object, or one of the
    four is not true or false), ``-3`` for a combination no TCP stack sends (none of the four,
    SYN with RST or FIN, FIN without ACK: NULL, Xmas or FIN scans). Other flags (PSH, URG,
    ...) are ignored.
    """
    if flags is None:
        return _NO_FLAGS
    if not isinstance(flags, dict):
        return _MALFORMED_FLAGS
    bits = 0
    for name, bit in _FLAG_BITS:
        value = flags.get(name, False)
        if value is True:
            bits |= bit
        elif value is not False:
            return _MALFORMED_FLAGS
    if not bits or (bits & _SYN and bits & (_RST | _FIN)) or (bits & _FIN and not bits & _ACK):
        return _IMPOSSIBLE_FLAGS
    return bits


def infer_reply(
    protocol: str,
    src_port: int | None,
    dst_port: int | None,
    flags: _Flags | None = None,
    icmp_type: int | None = None,
) -> bool | None:
    """Whether an event with no ``is_reply`` field is in the reply direction; None if unknown.

    TCP: SYN without ACK starts a connection (False), SYN with ACK answers one (True). ICMP echo,
    timestamp and information replies are replies. Otherwise a packet from a port below 32768
    to an ephemeral port (32768 and above, the Linux and IANA dynamic ranges) is taken for a
    reply, and the opposite for a request; anything else stays unknown.
    """
    if flags is not None and flags.SYN:
        return flags.ACK
    if icmp_type is not None:
        if (protocol, icmp_type) in _ICMP_REPLIES:
            return True
        if (protocol, icmp_type) in _ICMP_REQUESTS:
            return False
        return None
    if src_port is None or dst_port is None:
        return None
    if src_port < _EPHEMERAL_LOW <= dst_port:
        return True
    if dst_port < _EPHEMERAL_LOW <= src_port:
        return False
    return None


_Ep = tuple[str, str | None, str | None, str | None, str | None, dict[str, str] | None, str | None]


def _resolve_endpoint(ep: _Endpoint | None) -> _Ep:
    """(kind, namespace, workload, workload kind, pod, labels, name) of a Hubble endpoint."""
    if ep is None:
        return ("unknown", None, None, None, None, None, None)
    labels: dict[str, str] = {}
    reserved: list[str] = []
    dns_or_cidr: str | None = None
    for item in ep.labels:
        source, _, rest = item.partition(":")
        if source == "k8s":
            key, _, value = rest.partition("=")
            labels[key] = value
        elif source == "reserved":
            reserved.append(item.split("=", 1)[0])
        elif source in ("cidr", "fqdn") and dns_or_cidr is None:
            dns_or_cidr = rest.split("=", 1)[0]
    namespace = ep.namespace or labels.get("io.kubernetes.pod.namespace", "")
    if ep.pod_name and namespace:
        if ep.workloads:
            workload, wkind = ep.workloads[0].name or None, ep.workloads[0].kind or None
        else:
            workload, wkind = infer_workload(ep.pod_name, labels)
        return ("workload", namespace, workload, wkind, ep.pod_name, labels, None)
    for label in _RESERVED_ORDER:
        if label in reserved:
            kind, name = _RESERVED[label]
            return (kind, None, None, None, None, labels or None, name)
    for label in reserved:
        if label in _RESERVED:
            kind, name = _RESERVED[label]
            return (kind, None, None, None, None, labels or None, name)
    if dns_or_cidr is not None:
        return ("external", None, None, None, None, None, dns_or_cidr)
    if ep.identity in _RESERVED_IDS:
        kind, name = _RESERVED_IDS[ep.identity]
        return (kind, None, None, None, None, None, name)
    if namespace and labels:  # a pod whose name the event does not carry: see _with_pod
        workload = labels.get("app.kubernetes.io/name") or labels.get("app")
        return ("workload", namespace, workload, None, None, labels, None)
    return ("unknown", namespace or None, None, None, None, labels or None, None)


_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_NETLOC: Final = re.compile(r"//[^/?#]*")


def _url_path(url: str) -> str | None:
    """The path of an HTTP URL as ``urllib.parse.urlsplit`` finds it, or None when empty.

    urlsplit raises ValueError for a host in unbalanced or invalid brackets (``http://[x/a``);
    such a URL (Hubble copies it from the request) still has a path: the text after the scheme
    and the host, up to ``?`` or ``#``.
    """
    try:
        return urlsplit(url).path or None
    except ValueError:
        rest = url.lstrip()
        if scheme := _SCHEME.match(rest):
            rest = rest[scheme.end() :]
        if netloc := _NETLOC.match(rest):
            rest = rest[netloc.end() :]
        return rest.split("#", 1)[0].split("?", 1)[0] or None


_DECODE_LINES = msgspec.json.Decoder(list[_Line])
_DECODE_LINE = msgspec.json.Decoder(_Line)
_DECODE_FLOW = msgspec.json.Decoder(_Flow)
_DECODE_ANY = msgspec.json.Decoder()
_DECODE_ENDPOINT = msgspec.json.Decoder(_Endpoint)

#: Outcomes of HubbleReader._settle besides None (a row added, or the event skipped).
_REPLY: Final = object()
_DUPLICATE: Final = object()


def _decode_chunk(lines: list[bytes]) -> list[_Line | None] | None:
    """The lines decoded as one JSON array, or None when that fails."""
    try:
        return list(_DECODE_LINES.decode(b"[" + b",".join(lines) + b"]"))
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None


_PORTS: Final = re.compile(rb'"source_port":\s*(\d+)\s*,\s*"destination_port":\s*(\d+)')


def share_lines(
    lines: list[bytes], first: int, index: int, n: int
) -> tuple[list[int], list[bytes]]:
    """The lines (and their numbers, counted from ``first``) of parallel worker ``index`` of
    ``n``: by the sum of the first ``source_port`` and ``destination_port`` of the line's
    text, the same for every event of a connection, replies included (their ports are
    swapped); 0 without ports. ``Scanner.feed`` of the compiled scanner does the same."""
    if n == 1:
        return list(range(first, first + len(lines))), lines
    search = _PORTS.search
    numbers: list[int] = []
    mine: list[bytes] = []
    for i, line in enumerate(lines):
        match = search(line)
        if ((int(match[1]) + int(match[2])) % n if match else 0) == index:
            numbers.append(first + i)
            mine.append(line)
    return numbers, mine


def iter_share(
    path: Path, index: int = 0, n: int = 1, block_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, list[int], list[bytes], int, str | None]]:
    """Yield ``(first, numbers, lines, count, error)`` for the lines of ``path`` in chunks: of
    ``count`` lines numbered from ``first``, those of parallel worker ``index`` of ``n`` (all
    when n is 1; see :mod:`recommender.ingest.parallel`), with their numbers. ``error`` is set
    (and the rest of the file lost) where a compressed stream breaks off.

    The pure-Python path: :func:`~recommender.ingest._source.iter_line_chunks` splits the
    lines and :func:`share_lines` deals them out. With the compiled scanner, :func:`iter_fed`
    does both in C.
    """
    for first, lines, error in iter_line_chunks(path, block_bytes):
        numbers, mine = share_lines(lines, first, index, n)
        yield first, numbers, mine, len(lines), error


def iter_fed(
    path: Path, scanner: Any, index: int = 0, n: int = 1, block_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, list[int], list[int], int, bool, str | None]]:
    """:func:`iter_share` with the compiled scanner's ``feed``, which splits each block and
    scans the lines of worker ``index`` of ``n`` in place (no bytes object per line). Yields
    ``(first, numbers, unsure, count, blank, error)``: the scanner then holds the chunk's
    lines (``line(i)``, ``lines()``) until the consumer has read them, before the next block
    is read into the same buffer."""
    line_no = 1
    # The unfinished last line, in pieces: a line longer than a block (garbage, or a file that
    # is not JSON lines) is joined once, when it ends, not once per block.
    parts: list[bytes] = []
    size = 0
    # One buffer for every block: a new bytes object per block costs the kernel a fresh,
    # zeroed page for every 4 KiB read.
    buffer = bytearray(block_bytes)
    view = memoryview(buffer)
    with open_decompressed(path) as fh:
        while True:
            try:
                got = fh.readinto(view)  # type: ignore[attr-defined]
            except (OSError, EOFError, pa.ArrowException) as exc:
                scanner.load([])
                yield line_no, [], [], 0, False, f"the file breaks off: {exc}"
                return
            if not got and stream_error(fh) is not None:
                # A compressed file that breaks off: its complete lines are read, the
                # unfinished last one is not (the caller counts it as truncated).
                rest = parts[0] if len(parts) == 1 else b"".join(parts)
                numbers, unsure, count, used, blank = scanner.feed(
                    rest, view[:0], line_no, index, n, False
                )
                if count:
                    yield line_no, numbers, unsure, count, blank, None
                    line_no += count
                scanner.load([])
                yield line_no, [], [], 0, False, stream_error(fh)
                return
            block = view[:got]
            if got and size > got and buffer.find(b"\n", 0, got) < 0:
                parts.append(bytes(block))
                size += got
                continue
            rest = parts[0] if len(parts) == 1 else b"".join(parts)
            numbers, unsure, count, used, blank = scanner.feed(
                rest, block, line_no, index, n, not got
            )
            if count:
                parts = [bytes(block[used:])] if used < got else []
                yield line_no, numbers, unsure, count, blank, None
            else:
                parts = [rest, bytes(block)]
            scanner.load([])  # let go of the block before it is overwritten
            size = sum(len(part) for part in parts)
            line_no += count
            if not got:
                return


class _FedLines:
    """The lines of the scanner's last feed, as a sequence of bytes made on demand."""

    __slots__ = ("_count", "_scanner")

    def __init__(self, scanner: Any, count: int) -> None:
        self._scanner = scanner
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> bytes:
        return self._scanner.line(index)  # type: ignore[no-any-return]

    def all(self) -> list[bytes]:
        return self._scanner.lines()  # type: ignore[no-any-return]


def scanner_available() -> bool:
    """True when the compiled scanner (``recommender.ingest._hubble_scan``) is there and
    not switched off with the ``RECOMMENDER_NO_SCANNER`` environment variable."""
    return _scan is not None and _compiled()


def _skip_reason(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if "`$" not in text and "$." not in text:
        return "invalid-field"
    path = text.rsplit("$", 1)[-1]
    if "port" in path:
        return "invalid-port"
    if "time" in path:
        return "invalid-time"
    return "invalid-field"


class HubbleReader(FlowReader):
    """Reads Hubble JSON flows; see the module docstring for what is kept."""

    name = "hubble"
    #: A 5-tuple idle longer than this starts a new connection.
    idle_seconds: float = 300.0
    #: How long (event time) a row waits for other events of its connection.
    hold_seconds: float = 30.0
    #: At most this many rows wait; the oldest go first beyond it.
    max_pending: int = 200_000
    #: At most this many recent connections are remembered for de-duplication.
    max_seen: int = 1_000_000
    #: Bytes read at a time from JSON-lines files. A block that fits in the core's cache is
    #: still there when the compiled scanner reads it after the copy from the page cache:
    #: 1 MiB reads 10% faster than 4 MiB.
    block_bytes: int = 1 << 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connection key -> last event time (us): the connections seen recently.
        self._seen: dict[Any, int] = {}
        self._idle_us = int(self.idle_seconds * 1_000_000)
        self._endpoints: dict[bytes, tuple[_Ep, int]] = {}
        self._pods: dict[Any, _Ep] = {}
        # Rows wait here for hold_seconds (event time) before they reach the batch: a later
        # event of the same connection may still turn it into a denied one (the source node
        # reports FORWARDED, the destination node DROPPED).
        self._pending: OrderedDict[Any, list[Any]] = OrderedDict()
        self._latest = 0
        self._released_at = 0
        self._scanner = _scan.Scanner() if scanner_available() and _scan is not None else None

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        file = str(path)
        if read_head(path, 4096).lstrip().startswith(b"["):
            yield from self._read_array(file, path)
        else:
            for first, count, error, batches in self.iter_chunks(path):
                yield from batches
                if error:
                    self.ledger.read += 1
                    self.ledger.skip(file, first + count, "truncated-file", error)
        batch = self.builder.flush()
        if batch is not None:
            yield batch

    def finish(self) -> Iterator[pa.RecordBatch]:
        self._release(None)
        yield from super().finish()

    def _release(self, cutoff: int | None) -> None:
        """Move waiting rows older than ``cutoff`` (all when None) to the batch builder."""
        if self._scanner is not None and _scan is not None:
            _scan.release(self._pending, self.builder.rows, cutoff, self.max_pending)
            return
        pending = self._pending
        while pending:
            key, row = next(iter(pending.items()))
            if cutoff is not None and row[0] >= cutoff and len(pending) <= self.max_pending:
                break
            del pending[key]
            self.builder.rows.append(row)

    def iter_chunks(
        self, path: Path, index: int = 0, n: int = 1
    ) -> Iterator[tuple[int, int, str | None, Iterator[pa.RecordBatch]]]:
        """The JSON-lines file ``path`` chunk by chunk: ``(first, count, error, batches)``,
        where ``batches`` reads the chunk's lines of parallel worker ``index`` of ``n``
        (all when n is 1) and yields the full batches; it must be consumed before the next
        item. ``error`` is set where a compressed stream breaks off (see iter_share)."""
        file = str(path)
        if self._scanner is not None:
            scanner = self._scanner
            fed = iter_fed(path, scanner, index, n, self.block_bytes)
            for first, numbers, unsure, count, blank, error in fed:
                yield first, count, error, self._read_fed(file, numbers, unsure, blank)
            return
        for first, numbers, lines, count, error in iter_share(path, index, n, self.block_bytes):
            yield first, count, error, self._read_lines(file, numbers, lines)

    def _read_fed(
        self, file: str, numbers: list[int], unsure: list[int], blank: bool
    ) -> Iterator[pa.RecordBatch]:
        """Read the lines of the scanner's last feed (``numbers``: their line numbers)."""
        if not numbers:
            return
        scanner = self._scanner
        assert scanner is not None
        if blank:  # a whitespace-only line among them: the general path leaves it out
            yield from self._read_lines(file, numbers, scanner.lines())
            return
        self.ledger.read += len(numbers)
        self._read_scanned(file, numbers, _FedLines(scanner, len(numbers)), unsure)
        if len(self._seen) > self.max_seen:
            self._sweep()
        if self.builder.full:
            yield from self._drain()

    def _read_lines(
        self, file: str, numbers: Sequence[int], lines: list[bytes]
    ) -> Iterator[pa.RecordBatch]:
        """Read JSON lines (with their 1-based line ``numbers``); yield full batches."""
        if not lines:
            return
        if lines.count(b"\n") or lines.count(b"\r\n") or not lines[-1].strip():
            numbered = [(n, ln) for n, ln in zip(numbers, lines, strict=True) if ln.strip()]
            if not numbered:
                return
            numbers = [n for n, _ in numbered]
            lines = [ln for _, ln in numbered]
        self.ledger.read += len(lines)
        if self._scanner is None:
            self._read_decoded(file, numbers, lines, None)
        else:
            self._read_scanned(file, numbers, lines)
        if len(self._seen) > self.max_seen:
            self._sweep()
        if self.builder.full:
            yield from self._drain()

    def _read_decoded(
        self,
        file: str,
        numbers: Sequence[int],
        lines: list[bytes],
        decoded: list[_Line | None] | None,
    ) -> None:
        """The pure-Python path: decode every line with msgspec, then settle each event."""
        # Decode the chunk as one JSON array: fast, and exact as long as every line holds one
        # object. A line with two objects, or a broken line that the next one completes,
        # changes the count; then (or on any error) every line is decoded on its own.
        if decoded is None:
            decoded = _decode_chunk(lines)
        if decoded is None or len(decoded) != len(lines):
            decoded = [self._decode_one(file, n, ln) for n, ln in zip(numbers, lines, strict=True)]
        replies = duplicates = 0
        settle = self._settle
        for line_no, line, item in zip(numbers, lines, decoded, strict=True):
            if item is not None:
                outcome = settle(file, line_no, line, item)
                if outcome is _REPLY:
                    replies += 1
                elif outcome is _DUPLICATE:
                    duplicates += 1
        self.ledger.reply += replies
        self.ledger.duplicate += duplicates

    def _read_scanned(
        self,
        file: str,
        numbers: Sequence[int],
        lines: list[bytes] | _FedLines,
        unsure: list[int] | None = None,
    ) -> None:
        """The C path (``_hubble_scan``): the scanner settles the replies and repeated events it
        is sure about, in order, and adds the rows of plain new connections and of HTTP and DNS
        requests (FORWARDED TCP or UDP, endpoints and addresses already resolved once by
        Python, as _add would). It stops at each line Python must handle (DROPPED, a new
        endpoint, anything unusual), which is decoded here and settled as on the pure-Python
        path. ``unsure``: the lines msgspec must decode, when the scanner read (fed) them
        already; else it reads ``lines`` first. The rare chunk that only the pure-Python path
        reads exactly goes to it (see below)."""
        scanner = self._scanner
        assert scanner is not None
        if unsure is None:  # else the lines were fed (and read) already
            assert isinstance(lines, list)
            unsure = scanner.load(lines)
        # Lines the scanner is not sure about are decoded by msgspec first, as the pure-Python
        # path decodes all lines before settling any (so skip reasons are recorded in the same
        # order).
        decoded: dict[int, _Line | None] = {}
        failures: list[tuple[int, str, str]] = []
        for index in unsure:
            try:
                decoded[index] = _DECODE_LINE.decode(lines[index])
            except msgspec.ValidationError as exc:
                decoded[index] = None
                failures.append((index, _skip_reason(exc), str(exc)))
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                decoded[index] = None
                failures.append((index, "malformed-json", str(exc)))
        if failures:
            # The pure-Python path first decodes the chunk as one array; when that succeeds
            # although a line fails alone (lines that complete each other), it reads those
            # items instead: leave such a chunk to it.
            every = lines if isinstance(lines, list) else lines.all()
            whole = _decode_chunk(every)
            if whole is not None and len(whole) == len(every):
                scanner.load([])
                self._read_decoded(file, numbers, every, whole)
                return
            for index, reason, detail in failures:
                self.ledger.skip(file, numbers[index], reason, detail)
        replies = duplicates = 0
        settle = self._settle
        run = scanner.run
        idle_us = self._idle_us
        hold_us = int(self.hold_seconds * 1_000_000)
        count = len(lines)
        at = 0
        # What the scanner needs to add rows as _add does (the order is _hubble_scan.c's).
        context: list[Any] = [
            self._pending,
            self._endpoints,
            self._pods,
            _IP_CACHE,
            self.builder.rows,
            file,
            numbers,
            self._latest,
            self._released_at,
            hold_us,
            self.max_pending,
        ]
        while True:
            context[4], context[7], context[8] = self.builder.rows, self._latest, self._released_at
            at, more_replies, more_duplicates, added = run(at, self._seen, idle_us, context)
            self._latest, self._released_at = context[7], context[8]
            replies += more_replies
            duplicates += more_duplicates
            self.ledger.used += added
            if at >= count:
                break
            line = lines[at]
            # A line the scanner read is decoded by msgspec here (which cannot fail; if it
            # did, the line would be skipped with msgspec's reason like any other).
            item = decoded[at] if at in decoded else self._decode_one(file, numbers[at], line)
            if item is not None:
                outcome = settle(file, numbers[at], line, item)
                if outcome is _REPLY:
                    replies += 1
                elif outcome is _DUPLICATE:
                    duplicates += 1
            at += 1
        scanner.load([])  # drop the chunk's lines
        self.ledger.reply += replies
        self.ledger.duplicate += duplicates

    def _settle(self, file: str, line_no: int, line: bytes, item: _Line) -> object:
        """Settle one decoded event: _REPLY, _DUPLICATE, or None (added as a row, or skipped).

        Most events are replies or further events of a known connection, so they are settled
        here with as little work as possible; new rows go to _add.
        """
        f = item.flow
        if f is None:
            f = self._bare_flow(file, line_no, line, item)
            if f is None:
                return None
        reply = f.is_reply
        if reply is None or f.l7 is not None:
            self._add(f, item.node_name, item.time, file, line_no)
            return None
        if reply:
            ip, l4, when = f.IP, f.l4, f.time or item.time
            if (
                ip is not None
                and l4 is not None
                and when is not None
                and (ports := l4.TCP or l4.UDP) is not None
            ):
                tcp = l4.TCP is not None
                self._answered(
                    ip.source,
                    ip.destination,
                    "TCP" if tcp else "UDP",
                    ports.source_port,
                    ports.destination_port,
                    self._flag_bits(ports) if tcp else _NO_FLAGS,
                    _event_micros(when),
                    file,
                )
            return _REPLY
        # A non-reply L3/L4 event: a duplicate when its 5-tuple was seen recently.
        ip, l4, when = f.IP, f.l4, f.time or item.time
        if ip is None or l4 is None or when is None or not (ports := l4.TCP or l4.UDP):
            self._add(f, item.node_name, item.time, file, line_no)
            return None
        key = (
            ip.source,
            ip.destination,
            "TCP" if l4.TCP else "UDP",
            ports.source_port,
            ports.destination_port,
            None,
        )
        seen = self._seen
        last = seen.get(key)
        if last is None:
            self._add(f, item.node_name, item.time, file, line_no)
            return None
        micros = (when - _EPOCH) // _ONE_US if when.tzinfo else to_micros(when)
        if micros - last > self._idle_us:
            self._add(f, item.node_name, item.time, file, line_no)
            return None
        if micros > last:
            seen[key] = micros
        if l4.TCP is not None:
            self._forward(key, self._flag_bits(ports), micros, file)
        verdict = f.verdict
        if verdict != "FORWARDED" and _VERDICTS.get(verdict) in _OVERRIDING:
            self._override(key, _VERDICTS[verdict], f)
        return _DUPLICATE

    def _decode_one(self, file: str, line_no: int, line: bytes) -> _Line | None:
        """Decode one line on its own (after its chunk failed), or skip it with a reason."""
        try:
            return _DECODE_LINE.decode(line)
        except msgspec.ValidationError as exc:
            self.ledger.skip(file, line_no, _skip_reason(exc), str(exc))
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            # msgspec raises UnicodeDecodeError for invalid UTF-8 inside a string it decodes,
            # RecursionError for nesting deeper than its stack.
            self.ledger.skip(file, line_no, "malformed-json", str(exc))
        return None

    def _bare_flow(self, file: str, line_no: int, line: bytes, item: _Line) -> _Flow | None:
        """The Flow of a line without a "flow" key (a bare Flow object), or None (skipped)."""
        if item.IP is not None or item.verdict:
            try:
                return _DECODE_FLOW.decode(line)
            except msgspec.ValidationError as exc:
                self.ledger.skip(file, line_no, _skip_reason(exc), str(exc))
                return None
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                self.ledger.skip(file, line_no, "malformed-json", str(exc))
                return None
        self.ledger.skip(file, line_no, "not-a-flow", "no flow object in the line")
        return None

    def _flag_bits(self, ports: _Ports) -> int:
        """:func:`tcp_flag_bits` of a TCP event; malformed or impossible flags are counted in
        the ledger (the outcome stays unknown) and give ``_MALFORMED_FLAGS``."""
        bits = tcp_flag_bits(ports.flags)
        if bits < _NO_FLAGS:
            self.ledger.unknown_outcome(
                "malformed-tcp-flags" if bits == _MALFORMED_FLAGS else "impossible-tcp-flags"
            )
            return _MALFORMED_FLAGS
        return bits

    def _waiting(self, key: Any, micros: int, file: str) -> list[Any] | None:
        """The waiting row of connection ``key`` that an event of ``file`` at ``micros`` may
        settle: one of the same file at most ``hold_seconds`` older. (Whether an older row
        still waits depends on how the input was dealt out to parallel workers; these do not.)
        """
        row = self._pending.get(key)
        hold_us = int(self.hold_seconds * 1_000_000)
        if row is None or micros - row[0] > hold_us or row[_FILE_AT] != file:
            return None
        return row

    def _answered(
        self,
        source: str,
        destination: str,
        protocol: str,
        sport: int,
        dport: int,
        bits: int,
        micros: int,
        file: str,
    ) -> None:
        """A reply-direction TCP or UDP event: the waiting row of its connection (the reversed
        5-tuple) is established, or failed when it is a TCP reset and nothing answered yet.
        The compiled scanner's ``answered`` does the same."""
        if bits == _MALFORMED_FLAGS:
            return
        row = self._waiting((destination, source, protocol, dport, sport, None), micros, file)
        if row is None:
            return
        if protocol == "TCP" and bits >= 0 and bits & _RST:
            if row[_OUTCOME_AT] != "established":
                row[_OUTCOME_AT] = "failed"
        else:
            row[_OUTCOME_AT] = "established"

    def _forward(self, key: Any, bits: int, micros: int, file: str) -> None:
        """A further client-side TCP event of a waiting connection: an ACK without SYN or RST
        shows the handshake completed; a SYN sent again after ``_RETRY_US`` with nothing
        answered yet shows it did not. The compiled scanner's ``forward`` does the same."""
        if bits < 0:
            return
        if bits & _ACK and not bits & (_SYN | _RST):
            row = self._waiting(key, micros, file)
            if row is not None:
                row[_OUTCOME_AT] = "established"
        elif bits & _SYN and not bits & _ACK:
            row = self._waiting(key, micros, file)
            if row is not None and row[_OUTCOME_AT] == "unknown" and micros - row[0] >= _RETRY_US:
                row[_OUTCOME_AT] = "failed"

    def _override(self, key: Any, verdict: str, f: _Flow) -> None:
        """A later event of a waiting row's connection: a denial (or audit) wins."""
        waiting = self._pending.get(key)
        if waiting is not None and _RANK[verdict] > _RANK.get(waiting[_VERDICT_AT], 0):
            waiting[_VERDICT_AT] = verdict
            if verdict == "denied" and f.drop_reason_desc:
                waiting[_VERDICT_AT + 1] = str(f.drop_reason_desc)
            denied_by, malformed = _denied_by(f)
            if malformed:
                self.ledger.malformed_trace(malformed)
            if denied_by:
                waiting[_POLICIES_AT] = denied_by

    def _sweep(self) -> None:
        """Forget connections idle for longer than idle_seconds; keep at most max_seen."""
        horizon = self._latest - self._idle_us
        seen = self._seen
        kept = {k: t for k, t in seen.items() if t >= horizon}
        if len(kept) > self.max_seen // 2:
            newest = sorted(kept.items(), key=lambda kv: kv[1])[-(self.max_seen // 2) :]
            kept = dict(newest)
        self._seen = kept

    def _read_array(self, file: str, path: Path) -> Iterator[pa.RecordBatch]:
        """A file that is one JSON array of lines or flows (read whole: such files are small)."""
        size = 0 if is_stream(path) else path.stat().st_size
        if size > _MAX_ARRAY_BYTES:
            raise FlowFormatError(
                f"{file}: a JSON array of {size:,} bytes is too large to read at once; "
                "write the flows as JSON lines (hubble observe -o json does)."
            )
        with open_decompressed(path) as fh:
            text = fh.read()
        try:
            items = _DECODE_ANY.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            self.ledger.read += 1
            self.ledger.skip(file, 1, "malformed-json", str(exc))
            return
        if not isinstance(items, list):
            items = [items]
        for index, obj in enumerate(items):
            self.ledger.read += 1
            encoded = msgspec.json.encode(obj)
            try:
                line = _DECODE_LINE.decode(encoded)
                flow = line.flow
                if flow is None and isinstance(obj, dict) and ("IP" in obj or "verdict" in obj):
                    flow = _DECODE_FLOW.decode(encoded)
            except msgspec.ValidationError as exc:
                self.ledger.skip(file, index + 1, _skip_reason(exc), str(exc))
                continue
            if flow is None:
                self.ledger.skip(file, index + 1, "not-a-flow", "no flow object in the item")
                continue
            self._add(flow, line.node_name, line.time, file, index + 1)
            yield from self._drain()

    def _endpoint(self, raw: msgspec.Raw, ip: str | None) -> _Ep:
        key = bytes(raw)
        cached = self._endpoints.get(key)
        if cached is None:
            try:
                ep = _DECODE_ENDPOINT.decode(key) if key and key != b"null" else None
            except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
                ep = None
            cached = (_resolve_endpoint(ep), ep.identity if ep is not None else 0)
            if len(self._endpoints) > 200_000:
                self._endpoints.clear()
            self._endpoints[key] = cached
        found, identity = cached
        if found[0] != "workload":
            return found
        if found[4] is not None:  # remember which pod has this address (and identity)
            if ip is not None and self._pods.get(ip) is not found:
                if len(self._pods) > 500_000:
                    self._pods.clear()
                self._pods[ip] = found
                if identity:
                    self._pods[identity] = found
            return found
        # The event lost the pod name: take it from the pod seen with this address or identity.
        known = self._pods.get(ip) if ip is not None else None
        if known is None and identity:
            known = self._pods.get(identity)
        if known is not None and known[1] == found[1]:
            return known
        return found

    def _add(
        self, f: _Flow, node: str, line_time: datetime | None, file: str, line_no: int
    ) -> None:
        ledger = self.ledger
        when = f.time or line_time
        if when is None:
            ledger.skip(file, line_no, "missing-time", "neither flow.time nor time is set")
            return
        ip = f.IP
        if ip is None or not ip.source or not ip.destination:
            ledger.skip(file, line_no, "missing-address", "the flow has no IP source/destination")
            return
        l4 = f.l4
        ports = icmp = None
        if l4 is None:
            ledger.skip(file, line_no, "missing-l4", "the flow has no l4 (protocol) section")
            return
        if l4.TCP is not None:
            protocol, ports = "TCP", l4.TCP
        elif l4.UDP is not None:
            protocol, ports = "UDP", l4.UDP
        elif l4.SCTP is not None:
            protocol, ports = "SCTP", l4.SCTP
        elif l4.ICMPv4 is not None:
            protocol, icmp = "ICMP", l4.ICMPv4
        elif l4.ICMPv6 is not None:
            protocol, icmp = "ICMPv6", l4.ICMPv6
        else:
            ledger.skip(file, line_no, "unsupported-protocol", "l4 names no known protocol")
            return
        sport = dport = None
        if ports is not None:
            sport, dport = ports.source_port, ports.destination_port
            if not (0 <= sport <= 65535 and 0 <= dport <= 65535):
                ledger.skip(file, line_no, "invalid-port", f"ports {sport} -> {dport}")
                return
        bits = self._flag_bits(ports) if protocol == "TCP" and ports is not None else _NO_FLAGS
        reply = f.is_reply
        if reply is None:
            flags = None
            if bits >= 0:
                flags = _Flags(bool(bits & _SYN), bool(bits & _ACK), bool(bits & _FIN),
                               bool(bits & _RST))  # fmt: skip
            reply = (
                True
                if f.reply
                else infer_reply(
                    protocol, sport, dport, flags, icmp.type if icmp is not None else None
                )
            )
        l7 = f.l7
        if l7 is not None and l7.type in ("RESPONSE", 2):
            reply = True
        if reply:
            ledger.reply += 1
            if sport is not None and dport is not None and protocol in ("TCP", "UDP"):
                self._answered(ip.source, ip.destination, protocol, sport, dport, bits,
                               _event_micros(when), file)  # fmt: skip
            return
        micros = (when - _EPOCH) // _ONE_US if when.tzinfo else to_micros(when)
        verdict = _VERDICTS.get(f.verdict, "unknown")
        sip, dip = ip.source, ip.destination  # normalised below, for kept rows only
        conn_key = (sip, dip, protocol, sport, dport, icmp.type if icmp is not None else None)
        recent = self._seen
        seen = recent.get(conn_key)
        active = seen is not None and micros - seen <= self._idle_us
        l7_detail = None
        if l7 is not None and (l7.http is not None or l7.dns is not None):
            l7_detail = (
                (l7.http.method, l7.http.url) if l7.http is not None else None,
                l7.dns.query if l7.dns is not None else None,
            )
        if micros > self._latest:
            self._latest = micros
        if active:
            recent[conn_key] = max(micros, seen or 0)
            if l7 is None and protocol == "TCP":
                self._forward(conn_key, bits, micros, file)
            if verdict in _OVERRIDING:
                self._override(conn_key, verdict, f)
            if l7_detail is None:
                ledger.duplicate += 1
                return
            l7_key = (conn_key, l7_detail)
            l7_seen = recent.get(l7_key)
            if l7_seen is not None and micros - l7_seen <= self._idle_us:
                ledger.duplicate += 1
                recent[l7_key] = micros
                return
            recent[l7_key] = micros
            connections = 0
        else:
            recent[conn_key] = micros
            if l7_detail is not None:
                recent[(conn_key, l7_detail)] = micros
            connections = 1
        try:
            src_ip, dst_ip = norm_ip(sip), norm_ip(dip)
        except BadValue as exc:
            recent.pop(conn_key, None)
            ledger.skip(file, line_no, exc.reason, str(exc))
            return
        src_full = self._endpoint(f.source, src_ip)
        dst_full = self._endpoint(f.destination, dst_ip)
        src, src_name = src_full[:6], src_full[6]
        dst, dst_name = dst_full[:6], dst_full[6]
        icmp_type = icmp_code = drop_reason = dns_names = None
        svc_ns = svc_name = l7_protocol = method = http_path = http_code = dns_query = None
        if icmp is not None:
            icmp_type, icmp_code = icmp.type, icmp.code
            if not (0 <= icmp_type <= 255 and 0 <= icmp_code <= 255):
                recent.pop(conn_key, None)
                ledger.skip(
                    file, line_no, "invalid-icmp", f"ICMP type {icmp_type} code {icmp_code}"
                )
                return
        if verdict == "denied" and f.drop_reason_desc:
            drop_reason = str(f.drop_reason_desc)
        denied_by = None
        if verdict in ("denied", "audit"):
            denied_by, malformed = _denied_by(f)
            if malformed:
                ledger.malformed_trace(malformed)
        if f.destination_names:
            dns_names = sorted(set(f.destination_names))
        svc = f.destination_service
        if svc is not None and svc.name:
            svc_name, svc_ns = svc.name, svc.namespace or None
        if l7 is not None:
            if l7.http is not None:
                l7_protocol = "http"
                method = l7.http.method or None
                http_path = _url_path(l7.http.url) if l7.http.url else None
                http_code = l7.http.code if 100 <= l7.http.code <= 999 else None
            elif l7.dns is not None:
                l7_protocol, dns_query = "dns", l7.dns.query or None
            elif l7.kafka is not None:
                l7_protocol = "kafka"
        # An L7 request on TCP went through an established connection (the proxy's, at least);
        # else an ACK without SYN or RST (a connection seen mid-stream). A SYN waits for its
        # answer (see _answered and _forward).
        outcome = "unknown"
        if protocol == "TCP" and (
            l7 is not None or (bits >= 0 and bits & _ACK and not bits & (_SYN | _RST))
        ):
            outcome = "established"
        point = f.trace_observation_point
        # Column order is recommender.ingest.schema.FLOW_SCHEMA's (checked by a test).
        key = conn_key if connections else (conn_key, l7_detail)
        if key in self._pending:
            self.builder.rows.append(self._pending.pop(key))
        self._pending[key] = [
            micros,
            micros,
            *src,
            src_ip,
            sport,
            src_name,
            *dst,
            dst_ip,
            dport,
            dst_name,
            protocol,
            icmp_type,
            icmp_code,
            svc_ns,
            svc_name,
            None,
            dns_names,
            verdict,
            drop_reason,
            outcome,
            denied_by,
            None,
            _DIRECTIONS.get(f.traffic_direction),
            point if isinstance(point, str) and point else None,
            f.node_name or node or None,
            reply,
            connections,
            None,
            None,
            l7_protocol,
            method,
            http_path,
            http_code,
            dns_query,
            "hubble",
            file,
            line_no,
        ]
        ledger.used += 1
        if len(self._pending) & 255 == 0 or micros - self._released_at >= 1_000_000:
            self._released_at = micros
            self._release(self._latest - int(self.hold_seconds * 1_000_000))
