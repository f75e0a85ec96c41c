"""The compiled Hubble scanner (``recommender/ingest/_hubble_scan.c``) changes nothing but speed.

Every input is read twice, with the scanner and with ``RECOMMENDER_NO_SCANNER=1`` (the
pure-Python path of the same reader), and the two tables and ledgers must be identical: on the
real captures in ../shared, the sample, the fuzz corpus, hypothesis-generated and mutated lines,
and hand-made malformed lines. The scanner's own reading of a line is checked against msgspec's,
and its ``Scanner.feed`` (the parallel workers' split) against the regular expression it
replaces.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import IngestLedger, read_flows
from recommender.ingest import hubble

scan = pytest.importorskip(
    "recommender.ingest._hubble_scan", reason="the C scanner is not built (no C compiler?)"
)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus" / "hubble"
_spec = importlib.util.spec_from_file_location("_fuzz", ROOT / "tests/fuzz/test_fuzz_readers.py")
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


def _read(paths: Any, monkeypatch: pytest.MonkeyPatch, scanner: bool, workers: int = 1):
    if scanner:
        monkeypatch.delenv(hubble.NO_SCANNER_ENV, raising=False)
    else:
        monkeypatch.setenv(hubble.NO_SCANNER_ENV, "1")
    ledger = IngestLedger()
    table = read_flows(paths, ledger=ledger, format="hubble", workers=workers)
    return table, ledger.to_dict()


def assert_same(paths: Any, monkeypatch: pytest.MonkeyPatch, workers: int = 1) -> dict[str, Any]:
    """Both paths give the same table (row order included) and the same ledger."""
    fast, fast_ledger = _read(paths, monkeypatch, True, workers)
    slow, slow_ledger = _read(paths, monkeypatch, False, workers)
    assert fast.schema == slow.schema
    assert fast.to_pylist() == slow.to_pylist()
    assert fast_ledger == slow_ledger
    assert fast_ledger["balanced"]
    return fast_ledger


def test_the_scanner_is_used_unless_switched_off(monkeypatch):
    monkeypatch.delenv(hubble.NO_SCANNER_ENV, raising=False)
    assert hubble.HubbleReader(IngestLedger())._scanner is not None
    monkeypatch.setenv(hubble.NO_SCANNER_ENV, "1")
    assert hubble.HubbleReader(IngestLedger())._scanner is None
    monkeypatch.setenv(hubble.NO_SCANNER_ENV, "0")
    assert hubble.HubbleReader(IngestLedger())._scanner is not None


def test_sample_flows(monkeypatch):
    ledger = assert_same(ROOT / "sample_flows" / "hubble.jsonl.gz", monkeypatch)
    assert ledger["duplicate"] > 0 and ledger["reply"] > 0


@pytest.mark.parametrize("folder", ["hubble-otel-testdata", "cilium-starwars-demo"])
def test_real_captures(shared: Path, monkeypatch, folder: str):
    paths = sorted(p for p in (shared / "datasets" / folder).iterdir() if p.suffix != ".md")
    assert paths
    for path in paths:
        assert_same(path, monkeypatch)
    assert_same(paths, monkeypatch)  # all together: connections span files


def test_real_captures_on_two_workers(shared: Path, monkeypatch):
    assert_same(shared / "datasets" / "hubble-otel-testdata", monkeypatch, workers=2)


def test_fuzz_corpus(monkeypatch):
    files = sorted(CORPUS.iterdir())
    assert len(files) >= 20
    for path in files:
        assert_same(path, monkeypatch)


# ---------------------------------------------------------------------------------------------
# Generated lines
# ---------------------------------------------------------------------------------------------

_TEMPLATE: dict[str, Any] = json.loads(fuzz.RECORDS["hubble"][0])


#: URLs of HTTP requests: the scanner takes their path as urllib.parse.urlsplit does, and
#: leaves those it cannot be sure about (brackets, spaces) to Python.
_URLS = [
    "http://x/a",
    "http://x/a?b=1#c",
    "https://user@x:8443/a/b/",
    "HTTP://x",
    "//x/p?q",
    "/a?b",
    "a/b",
    "x:80/a",
    "1x:/a",
    "mailto:a@b",
    "#frag",
    "?q",
    "",
    "http://[::1]:80/v6",
    "http://[x/a",
    " http://x/lead",
    "http://x/trail ",
    "http://x/a%20b;p",
]


#: TCP flags of generated events: the handshake, data, resets, and malformed or impossible ones
#: (which the scanner leaves to Python, which counts them in the ledger).
_FLAGS: list[Any] = [
    {"SYN": True},
    {"SYN": True, "ACK": True},
    {"ACK": True},
    {"ACK": True, "PSH": True},
    {"ACK": True, "FIN": True},
    {"RST": True},
    {"RST": True, "ACK": True},
    {"SYN": True, "RST": True},
    {"FIN": True},
    {},
    {"PSH": True},
    {"SYN": "yes"},
    {"ACK": None},
    "SYN",
    None,
]


def _event(rng: random.Random) -> dict[str, Any]:
    """A plausible event of one of a few connections (so replies and repeats are common)."""
    line = json.loads(json.dumps(_TEMPLATE))
    flow = line["flow"]
    conn = rng.randrange(4)
    proto = rng.choice(["TCP", "TCP", "UDP", "SCTP", "ICMPv4"])
    sport, dport = 40000 + conn, rng.choice([80, 53, 8080])
    if rng.random() < 0.3:
        sport, dport = dport, sport
    if proto == "ICMPv4":
        flow["l4"] = {proto: {"type": rng.choice([0, 8]), "code": 0}}
    else:
        ports: dict[str, Any] = {"source_port": sport, "destination_port": dport}
        if proto == "TCP" and rng.random() < 0.6:
            ports["flags"] = rng.choice(_FLAGS)
        flow["l4"] = {proto: ports}
    flow["IP"] = {"source": f"10.0.0.{1 + conn % 2}", "destination": "10.0.1.9"}
    seconds = rng.choice([0, 0, 1, 2, 40, 400, 401, 900])
    fraction = rng.choice(["", ".5", ".123456", ".1234565", ".999999949", ".9999995"])
    flow["time"] = f"2026-01-05T09:{seconds // 60:02d}:{seconds % 60:02d}{fraction}Z"
    flow["verdict"] = rng.choice(["FORWARDED", "FORWARDED", "DROPPED", "AUDIT", 2, 1])
    choice = rng.randrange(6)
    if choice == 0:
        flow.pop("is_reply", None)
    elif choice == 1:
        flow["is_reply"] = None
    else:
        flow["is_reply"] = rng.random() < 0.3
    if rng.random() < 0.25:
        flow["l7"] = rng.choice(
            [
                {"type": "REQUEST", "http": {"method": "GET", "url": rng.choice(_URLS)}},
                {"type": "REQUEST", "http": {"method": rng.choice(["", "POST"]), "url": "/a"}},
                {"type": "REQUEST", "http": {"code": rng.choice([0, 99, 200, 999, 1000])}},
                {"type": "RESPONSE", "http": {"code": 200}},
                {"type": "REQUEST", "dns": {"query": rng.choice(["db.example.", ""])}},
                {"type": "REQUEST", "dns": {"query": "a."}, "http": {"url": "/b"}},
                {"type": "REQUEST", "http": None, "dns": None},
                {"type": "REQUEST", "kafka": {"topic": "t"}},
                None,
            ]
        )
    if rng.random() < 0.2:
        line["time"] = flow.pop("time")
    # The fields the scanner copies into the rows it adds itself.
    for key, options in (
        ("traffic_direction", ["INGRESS", "EGRESS", 1, 2, 0, "TRAFFIC_DIRECTION_UNKNOWN"]),
        ("trace_observation_point", ["TO_ENDPOINT", "", 101, "TO_STACK"]),
        ("node_name", ["", "node-1", "node-2"]),
        ("destination_service", [None, {}, {"name": "web"}, {"name": "web", "namespace": "b"}]),
        ("destination_names", [[], ["api.example.com"]]),
    ):
        if rng.random() < 0.5:
            flow[key] = rng.choice(options)
    if rng.random() < 0.3:
        line["node_name"] = rng.choice(["", "node-3"])
    if rng.random() < 0.05 and isinstance(flow.get("l7"), dict):
        flow["l7"]["type"] = rng.choice([1, 2])
    return line


def _render(rng: random.Random, line: dict[str, Any]) -> bytes:
    """Serialise; sometimes mutated (as the fuzz tests do) or spaced out."""
    roll = rng.random()
    if roll < 0.15:
        line = fuzz.mutate_record(line, rng, huge=50)
    text = json.dumps(line, separators=(",", ":") if rng.random() < 0.7 else (", ", ": "))
    raw = text.encode()
    if roll > 0.93:
        raw = fuzz.mutate_bytes(raw, rng)
    return raw


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 120))
def test_generated_lines(tmp_path: Path, monkeypatch, seed: int, count: int):
    rng = random.Random(seed)
    lines = [_render(rng, _event(rng)) for _ in range(count)]
    if rng.random() < 0.2:
        lines.insert(rng.randrange(len(lines) + 1), b"")
    path = tmp_path / f"gen-{seed}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert_same(path, monkeypatch)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_scanner_reads_what_msgspec_reads(seed: int):
    """Whenever the scanner is sure about a line, msgspec decodes it to the same values."""
    rng = random.Random(seed)
    raw = _render(rng, _event(rng))
    scanner = scan.Scanner()
    assert scanner.load([raw]) in ([], [0])
    got = scanner.fields(0)
    if got is None:
        return
    line = hubble._DECODE_LINE.decode(raw)  # must not raise
    assert_fields_match(got, line)


def assert_fields_match(got: dict[str, Any], line: hubble._Line) -> None:
    f = line.flow
    assert got["flow"] is (f is not None)
    if f is None:
        return
    assert got["is_reply"] is f.is_reply
    assert got["l7"] is (f.l7 is not None)
    assert got["ip"] is (f.IP is not None)
    if f.IP is not None:
        assert (got["source"], got["destination"]) == (f.IP.source, f.IP.destination)
    assert got["l4"] is (f.l4 is not None)
    if f.l4 is not None:
        assert got["tcp"] is (f.l4.TCP is not None)
        assert got["udp"] is (f.l4.UDP is not None)
        for name, ports in (("tcp_ports", f.l4.TCP), ("udp_ports", f.l4.UDP)):
            if ports is not None:
                assert got[name] == (ports.source_port, ports.destination_port)
    when = f.time or line.time
    if when is None:
        assert got["micros"] is None
    else:
        assert got["micros"] == (when - hubble._EPOCH) // hubble._ONE_US
    overriding = hubble._VERDICTS.get(f.verdict) in hubble._OVERRIDING
    assert got["overriding"] or not overriding


# ---------------------------------------------------------------------------------------------
# Malformed and unusual lines: the scanner leaves them to msgspec
# ---------------------------------------------------------------------------------------------

_GOOD = (
    b'{"flow":{"time":"2026-01-05T09:00:00.123456789Z","verdict":"FORWARDED",'
    b'"IP":{"source":"10.0.0.1","destination":"10.0.0.2"},'
    b'"l4":{"TCP":{"source_port":40000,"destination_port":80}},"is_reply":false},'
    b'"node_name":"n1"}'
)

UNSURE_LINES = [
    _GOOD[:-1],  # truncated
    _GOOD + b"{}",  # trailing characters
    _GOOD.replace(b'"n1"', b'"n\\u0031"'),  # an escape
    _GOOD.replace(b'"n1"', "\"n\u00e9\"".encode()),  # non-ASCII
    _GOOD.replace(b'"n1"', b'"n\xff"'),  # invalid UTF-8
    _GOOD.replace(b'"n1"', b'"n\x01"'),  # a control character
    _GOOD.replace(b'"is_reply":false', b'"is_reply":false,"is_reply":true'),  # repeated key
    _GOOD.replace(b'"is_reply":false', b'"is_reply":0'),
    _GOOD.replace(b"40000", b"40000.0"),
    _GOOD.replace(b"40000", b"4e4"),
    _GOOD.replace(b"40000", b"040000"),
    _GOOD.replace(b"40000", b'"40000"'),
    _GOOD.replace(b"40000", b"123456789012345678901234567890"),
    _GOOD.replace(b"40000", b"NaN"),
    _GOOD.replace(b'"FORWARDED"', b"true"),
    _GOOD.replace(b'"FORWARDED"', b"1.5"),
    _GOOD.replace(b'"n1"', b"null"),
    _GOOD.replace(b'"10.0.0.1"', b"7"),
    _GOOD.replace(b"Z", b"+00:00", 1),
    _GOOD.replace(b"T09", b" 09", 1),
    _GOOD.replace(b"05T", b"31T", 1).replace(b"-01-", b"-02-", 1),  # 31 February
    _GOOD.replace(b"09:00:00", b"24:00:00", 1),
    _GOOD.replace(b"09:00:00", b"09:00:60", 1),
    _GOOD.replace(b".123456789Z", b".Z", 1),
    _GOOD.replace(b".123456789Z", b".1234567891Z", 1),
    _GOOD.replace(b"Z", b"", 1),  # naive time
    _GOOD.replace(b'"node_name":"n1"', b'"node_name":"n1","x":' + b"[" * 60 + b"]" * 60),
    _GOOD.replace(b'"node_name":"n1"', b'"x":[1,]'),
    _GOOD.replace(b'"node_name":"n1"', b'"x":{"a" 1}'),
    _GOOD.replace(b'"node_name":"n1"', b'"x":tru'),
    _GOOD.replace(b'"node_name":"n1"', b'"x":-'),
    _GOOD.replace(b'"node_name":"n1"', b'"flow":null'),
    b'["not", "an", "object"]',
    b'"a string"',
    b"{",
    b"}",
    _GOOD.replace(b'"flow":{', b'"flow":[', 1),
    _GOOD.replace(b'"l4":{', b'"l4":{"TCP":null,"TCP":', 1),
    _GOOD.replace(b'"l4":{"TCP":{', b'"l4":{"TCP":{"flags":{"SYN":1},', 1),
    _GOOD.replace(b'"IP":{', b'"IP":{"source":"a","source":', 1),
    _GOOD.replace(b'"is_reply":false', b'"is_reply":false,"destination_names":["a",1]'),
    _GOOD.replace(b'"is_reply":false', b'"is_reply":false,"l7":{"kafka":[]}'),
]


@pytest.mark.parametrize("line", UNSURE_LINES, ids=range(len(UNSURE_LINES)))
def test_odd_lines_go_to_msgspec(line: bytes):
    scanner = scan.Scanner()
    assert scanner.load([_GOOD, line, _GOOD]) == [1]


def test_what_the_scanner_reads_from_a_line():
    scanner = scan.Scanner()
    spaced = b" " + _GOOD.replace(b'":', b'" :\n').replace(b",", b" ,\t") + b" \r\n"
    assert scanner.load([_GOOD, spaced]) == []
    for index in (0, 1):
        got = scanner.fields(index)
        assert got is not None
        assert got["micros"] == 1767603600123457  # .123456789 rounds up, as msgspec does
        assert (got["source"], got["destination"], got["tcp_ports"]) == (
            "10.0.0.1",
            "10.0.0.2",
            (40000, 80),
        )
        assert got["is_reply"] is False and got["tcp"] and not got["udp"]
        assert_fields_match(got, hubble._DECODE_LINE.decode(_GOOD))


def test_odd_lines_are_read_alike(tmp_path: Path, monkeypatch):
    """Every odd line among good ones (a new connection, its repeats and replies)."""
    reply = _GOOD.replace(b'"is_reply":false', b'"is_reply":true')
    later = _GOOD.replace(b"09:00:00", b"09:00:01", 1)
    lines = []
    for odd in UNSURE_LINES:
        lines += [_GOOD, odd, reply, later, odd]
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    ledger = assert_same(path, monkeypatch)
    assert ledger["skipped"]["malformed-json"] >= 10


def test_lines_that_complete_each_other(tmp_path: Path, monkeypatch):
    """A chunk that decodes as one array although a line fails alone: read alike."""
    text = _GOOD.decode()
    cut = text.index('"l4"')
    lines = [text[:cut], text[cut:] + "," + text, text]  # 3 lines holding 3 objects
    path = tmp_path / "split.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert_same(path, monkeypatch)


def test_drop_after_forward_overrides_on_both_paths(tmp_path: Path, monkeypatch):
    dropped = _GOOD.replace(b'"FORWARDED"', b'"DROPPED","drop_reason_desc":"POLICY_DENIED"')
    path = tmp_path / "drop.jsonl"
    path.write_bytes(b"\n".join([_GOOD, _GOOD, dropped, _GOOD]) + b"\n")
    assert_same(path, monkeypatch)
    table, ledger = _read(path, monkeypatch, True)
    assert table.column("verdict").to_pylist() == ["denied"]
    assert table.column("drop_reason").to_pylist() == ["POLICY_DENIED"]
    assert (ledger["used"], ledger["duplicate"]) == (1, 3)


# ---------------------------------------------------------------------------------------------
# The split between parallel workers
# ---------------------------------------------------------------------------------------------

_PORT_TEXT = st.sampled_from(
    [
        b'"source_port":',
        b'"destination_port":',
        b'"source_port": 12 ,\n"destination_port":\t7',
        b"0",
        b"99999999999999999999999",
        b" ",
        b",",
        b"\x0b",
        b'"',
        b"x",
        b"\xff",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_PORT_TEXT, max_size=12).map(b"".join), max_size=8), st.integers(1, 4))
def test_share_matches_the_regular_expression(lines: list[bytes], n: int):
    """Scanner.feed splits blocks as readlines() does, wherever a block ends, and deals the
    lines out as the regular expression of hubble.share_lines does."""
    lines = [line.replace(b"\n", b" ") + b"\n" for line in lines]
    data = b"".join(lines) + b'{"last": 1}'  # the last line has no newline
    everything = [*lines, b'{"last": 1}']
    for index in range(n):
        expected = hubble.share_lines(everything, 5, index, n)
        for cut in sorted({0, 1, len(data) // 3, len(data) // 2, len(data) - 1, len(data)}):
            got_numbers, got_lines, rest, first = [], [], b"", 5
            scanner = scan.Scanner()
            for block in (data[:cut], data[cut:], b""):
                numbers, _, count, used, _ = scanner.feed(rest, block, first, index, n, not block)
                rest = block[used:] if count else rest + block
                got_numbers += numbers
                got_lines += scanner.lines()
                first += count
            assert (got_numbers, got_lines) == expected
            assert first == 5 + len(everything) and rest == b""


def test_share_of_real_lines():
    lines = [line.encode() + b"\n" for line in fuzz.RECORDS["hubble"]]
    pattern = re.compile(rb'"source_port":\s*(\d+)\s*,\s*"destination_port":\s*(\d+)')
    assert any(pattern.search(line) for line in lines)
    both = [hubble.share_lines(lines, 1, index, 2) for index in range(2)]
    assert sorted(both[0][0] + both[1][0]) == list(range(1, len(lines) + 1))
    scanner = scan.Scanner()
    for index in range(2):
        numbers, _, _, _, _ = scanner.feed(b"", b"".join(lines), 1, index, 2, True)
        assert (numbers, scanner.lines()) == both[index]


@given(st.lists(st.integers(0, 5), max_size=40))
def test_unique_objects_by_identity(picks: list[int]):
    """unique_objects finds the distinct objects by identity (equal but distinct dicts stay
    apart), in order of first appearance, with each value's position."""
    pool = [{"app": "a"}, {"app": "a"}, {"app": "b"}, None, "x", ("t",)]
    values = [pool[i] for i in picks]
    uniques, positions = scan.unique_objects(values)
    order = list(dict.fromkeys(picks))
    assert [id(u) for u in uniques] == [id(pool[i]) for i in order]
    at = pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(positions)])
    assert at.to_pylist() == [order.index(i) for i in picks]


@given(st.lists(st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=3)), min_size=3,
                         max_size=3), max_size=20))
def test_columns_of_rows(rows: list[list[object]]):
    """The batch builder's transposition in C gives zip(*rows), with None for a column of
    only None."""
    expected = [
        None if all(v is None for v in col) else list(col) for col in zip(*rows, strict=True)
    ]
    assert scan.columns(rows, 3) == (expected if rows else [[], [], []])
    assert scan.columns([tuple(r) for r in rows], 3) == scan.columns(rows, 3)
    with pytest.raises(ValueError):
        scan.columns([*rows, [1, 2]], 3)


_ARROW_TYPES = [pa.string(), pa.int16(), pa.int32(), pa.int64(), pa.timestamp("us", tz="UTC")]


@given(
    st.sampled_from(_ARROW_TYPES),
    st.lists(
        st.one_of(st.none(), st.text(max_size=6), st.integers(-(2**64), 2**64), st.booleans()),
        max_size=40,
    ),
)
def test_arrow_arrays_built_in_c_equal_pyarrows(type_: pa.DataType, values: list[object]):
    """The batch builder's arrays from buffers built in C equal pyarrow's conversion of the
    same values; values of another type or out of range are left to pyarrow."""
    from recommender.ingest import _common

    built = _common._compiled_array(values, type_)
    try:
        expected = pa.array(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        assert built is None
        return
    if built is None:  # declined: only for values pyarrow converts differently (bools)
        assert any(isinstance(v, bool) for v in values) or type_ == pa.string()
        return
    built.validate(full=True)
    assert built.equals(expected)
    assert built.null_count == expected.null_count


def test_scanner_rejects_wrong_arguments():
    scanner = scan.Scanner()
    with pytest.raises(TypeError):
        scanner.load((b"{}",))
    assert scanner.load([b"{}", "text"]) == [1]  # not bytes: left to Python
    with pytest.raises(IndexError):
        scanner.fields(5)
    with pytest.raises(TypeError):
        scanner.run(0, [], 1)
    with pytest.raises(TypeError):
        scanner.run(0, {}, 1, [{}, {}])  # not the reader's context
    with pytest.raises(ValueError):
        scanner.feed(b"", b"", 1, 0, 0, True)
    with pytest.raises(IndexError):
        scanner.line(0)


def test_read_in_chunks_of_any_size(monkeypatch):
    """Chunk boundaries fall anywhere (iter_line_chunks cuts by bytes)."""
    path = ROOT / "sample_flows" / "hubble.jsonl.gz"
    fast, _ = _read(path, monkeypatch, True)
    reader = hubble.HubbleReader(IngestLedger(), batch_rows=7)
    assert reader._scanner is not None
    from recommender.ingest._source import iter_line_chunks

    batches: list[pa.RecordBatch] = []
    for first, lines, _ in iter_line_chunks(path, chunk_bytes=20000):
        batches.extend(reader._read_lines(str(path), range(first, first + len(lines)), lines))
    batches.extend(reader.finish())
    table = pa.Table.from_batches(batches)
    assert table.num_rows == fast.num_rows
    assert msgspec.json.encode(sorted(map(str, table.to_pylist()))) == msgspec.json.encode(
        sorted(map(str, fast.to_pylist()))
    )


@pytest.mark.parametrize("code", [-360648208249691027609, 2**70, 256, -1])
def test_impossible_icmp_code_is_a_skip_on_both_paths(tmp_path: Path, monkeypatch, code: int):
    """Found by test_generated_lines: an ICMP code beyond int16 reached the Arrow column and
    raised OverflowError out of the reader."""
    line = json.loads(json.dumps(_TEMPLATE))
    line["flow"]["l4"] = {"ICMPv4": {"type": 8, "code": code}}
    line["flow"]["is_reply"] = False
    path = tmp_path / "icmp.jsonl"
    path.write_text(json.dumps(line) + "\n")
    ledger = assert_same(path, monkeypatch)
    assert ledger["used"] == 0 and ledger["skipped"] == {"invalid-icmp": 1}


def test_http_paths_of_any_url(tmp_path: Path, monkeypatch):
    """Every URL of the list (and one the standard library refuses) gives the same path on
    both paths, and the path urlsplit gives where it gives one."""
    from urllib.parse import urlsplit

    lines = []
    for n, url in enumerate(_URLS):
        line = json.loads(json.dumps(_TEMPLATE))
        flow = line["flow"]
        flow["is_reply"] = False
        flow["verdict"] = "FORWARDED"
        flow["l4"] = {"TCP": {"source_port": 40000 + n, "destination_port": 80}}
        flow["l7"] = {"type": "REQUEST", "http": {"method": "GET", "url": url}}
        lines.append(json.dumps(line))
    path = tmp_path / "urls.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert_same(path, monkeypatch)
    table = read_flows(path, format="hubble")
    ports, paths = table.column("src_port").to_pylist(), table.column("http_path").to_pylist()
    got = dict(zip(ports, paths, strict=True))
    for n, url in enumerate(_URLS):
        try:
            expected = urlsplit(url).path or None if url else None
        except ValueError:
            expected = "/a"  # "http://[x/a": the text after the host
        assert got[40000 + n] == expected, url


def _odd_file(tmp_path: Path) -> tuple[Path, list[bytes]]:
    lines = [line.encode() for line in fuzz.RECORDS["hubble"][:6]]
    lines.insert(2, b'{"junk": "' + b"x" * 1000 + b'"}')
    lines.insert(4, b"")
    lines.insert(5, b"   \r")
    lines.insert(7, b"{not json")
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b"\n".join(lines * 3))  # no newline at the end
    return path, lines * 3


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fed_chunks_are_the_split_chunks(tmp_path: Path, n: int):
    """Scanner.feed (split and scan in place, in the reused read buffer) keeps the lines and
    numbers of the pure-Python split (iter_line_chunks and share_lines), wherever blocks end,
    lines longer than several blocks (kept in pieces, joined once) included, and flags
    whitespace-only lines."""
    path, lines = _odd_file(tmp_path)
    for block_bytes in (7, 64, 333, 1 << 20):
        for index in range(n):
            split = list(hubble.iter_share(path, index, n, block_bytes))
            scanner = scan.Scanner()
            fed = []
            for _, numbers, unsure, count, blank, error in hubble.iter_fed(
                path, scanner, index, n, block_bytes
            ):
                kept = scanner.lines()
                assert error is None
                assert blank == any(not line.strip() for line in kept)
                assert all(0 <= i < len(kept) for i in unsure)
                fed.append((numbers, kept, count))
            assert [x for c in fed for x in c[0]] == [x for c in split for x in c[1]]
            assert [x for c in fed for x in c[1]] == [x for c in split for x in c[2]]
            assert sum(c[2] for c in fed) == len(lines)


@pytest.mark.parametrize("block_bytes", [50, 700, 4096])
def test_reading_fed_blocks_of_any_size(tmp_path: Path, monkeypatch, block_bytes: int):
    """The reader on fed blocks of any size gives the pure-Python path's table and ledger."""
    path, _ = _odd_file(tmp_path)
    sample = ROOT / "sample_flows" / "hubble.jsonl.gz"
    monkeypatch.setattr(hubble.HubbleReader, "block_bytes", block_bytes)
    for source in (path, sample):
        ledger = assert_same(source, monkeypatch)
        assert ledger["read"] > 0


# ---------------------------------------------------------------------------------------------
# The connection outcome, on both paths
# ---------------------------------------------------------------------------------------------


def _tcp(at: str, src: str, dst: str, sport: int, dport: int, flags: Any, reply: bool) -> bytes:
    ports: dict[str, Any] = {"source_port": sport, "destination_port": dport}
    if flags is not None:
        ports["flags"] = flags
    line = {
        "flow": {
            "time": f"2026-01-05T09:00:{at}Z",
            "verdict": "FORWARDED",
            "IP": {"source": src, "destination": dst},
            "l4": {"TCP": ports},
            "is_reply": reply,
        },
        "node_name": "n1",
    }
    return json.dumps(line).encode()


def _conversation(sport: int, dport: int, events: list[tuple[str, Any, bool]]) -> list[bytes]:
    """Events of one connection 10.0.0.1:sport -> 10.0.0.2:dport: (time, flags, is_reply)."""
    return [
        _tcp(at, *(("10.0.0.2", "10.0.0.1", dport, sport) if reply else
                   ("10.0.0.1", "10.0.0.2", sport, dport)), flags, reply)
        for at, flags, reply in events
    ]  # fmt: skip


SYN, SYNACK, ACK = {"SYN": True}, {"SYN": True, "ACK": True}, {"ACK": True}
RST, RSTACK = {"RST": True}, {"RST": True, "ACK": True}

#: (events, outcome, ledger outcome_unknown) per connection.
OUTCOMES: list[tuple[list[tuple[str, Any, bool]], str, dict[str, int]]] = [
    ([("00.1", SYN, False), ("00.2", SYNACK, True), ("00.3", ACK, False)], "established", {}),
    ([("00.1", SYN, False), ("00.2", SYNACK, True)], "established", {}),  # the answer alone
    ([("00.1", SYN, False), ("00.3", ACK, False)], "established", {}),  # the client's ACK
    ([("00.1", ACK, False), ("00.2", ACK, True)], "established", {}),  # seen mid-stream
    ([("00.1", SYN, False), ("00.2", RSTACK, True)], "failed", {}),  # a closed port
    ([("00.1", SYN, False), ("00.2", RST, True), ("01.2", SYN, False)], "failed", {}),
    ([("00.1", SYN, False), ("01.1", SYN, False), ("03.1", SYN, False)], "failed", {}),  # retries
    ([("00.1", SYN, False), ("00.1", SYN, False)], "unknown", {}),  # another observation point
    ([("00.1", SYN, False)], "unknown", {}),  # the answer is not in the capture
    ([("00.1", None, False), ("00.2", None, True)], "established", {}),  # a reply, no flags
    ([("00.1", SYN, False), ("00.2", RSTACK, True), ("00.3", SYNACK, True)], "established", {}),
    ([("00.1", {"SYN": "yes"}, False)], "unknown", {"malformed-tcp-flags": 1}),
    ([("00.1", "SYN", False)], "unknown", {"malformed-tcp-flags": 1}),
    ([("00.1", {"SYN": True, "RST": True}, False)], "unknown", {"impossible-tcp-flags": 1}),
    ([("00.1", {"FIN": True, "PSH": True, "URG": True}, False)], "unknown",
     {"impossible-tcp-flags": 1}),  # an Xmas scan
    ([("00.1", {}, False)], "unknown", {"impossible-tcp-flags": 1}),  # a NULL scan
    ([("00.1", SYN, False), ("00.2", {"RST": True, "SYN": True}, True)], "unknown",
     {"impossible-tcp-flags": 1}),
]


@pytest.mark.parametrize("case", range(len(OUTCOMES)))
def test_tcp_outcome_truth_table_on_both_paths(tmp_path: Path, monkeypatch, case: int):
    events, outcome, notes = OUTCOMES[case]
    path = tmp_path / "conn.jsonl"
    path.write_bytes(b"\n".join(_conversation(40000, 8080, events)) + b"\n")
    ledger = assert_same(path, monkeypatch)
    table, _ = _read(path, monkeypatch, True)
    assert table.column("outcome").to_pylist() == [outcome]
    assert ledger["outcome_unknown"] == notes
    assert ledger["used"] == 1 and ledger["skipped_total"] == 0


def test_outcomes_of_many_interleaved_connections_on_both_paths(tmp_path: Path, monkeypatch):
    """All the cases at once, interleaved, each its own 5-tuple: every row as alone."""
    rng = random.Random(5)
    lines = []
    for k, (events, _, _) in enumerate(OUTCOMES):
        lines += [(at, k, line) for (at, _, _), line in
                  zip(events, _conversation(41000 + k, 80 + k, events), strict=True)]  # fmt: skip
    rng.shuffle(lines)
    lines.sort(key=lambda x: x[0])
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"\n".join(line for _, _, line in lines) + b"\n")
    assert_same(path, monkeypatch)
    table, _ = _read(path, monkeypatch, True)
    got = dict(zip(table.column("src_port").to_pylist(), table.column("outcome").to_pylist(),
                   strict=True))  # fmt: skip
    assert got == {41000 + k: outcome for k, (_, outcome, _) in enumerate(OUTCOMES)}


def test_an_answer_in_another_file_or_too_late_does_not_count(tmp_path: Path, monkeypatch):
    first, answer = _conversation(40000, 8080, [("00.1", SYN, False), ("00.2", SYNACK, True)])
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(first + b"\n")
    b.write_bytes(answer + b"\n")
    assert_same([a, b], monkeypatch)
    table, _ = _read([a, b], monkeypatch, True)
    assert table.column("outcome").to_pylist() == ["unknown"]
    late = _tcp("45.0", "10.0.0.2", "10.0.0.1", 8080, 40000, SYNACK, True)
    a.write_bytes(first + b"\n" + late + b"\n")
    table, _ = _read(a, monkeypatch, True)
    assert table.column("outcome").to_pylist() == ["unknown"]


def test_udp_answered_or_not(tmp_path: Path, monkeypatch):
    def udp(at: str, reply: bool, sport: int) -> bytes:
        src, dst, sp, dp = ("10.0.0.9", "10.0.0.1", 53, sport) if reply else (
            "10.0.0.1", "10.0.0.9", sport, 53)  # fmt: skip
        return json.dumps({"flow": {
            "time": f"2026-01-05T09:00:{at}Z", "verdict": "FORWARDED",
            "IP": {"source": src, "destination": dst},
            "l4": {"UDP": {"source_port": sp, "destination_port": dp}}, "is_reply": reply,
        }}).encode()  # fmt: skip

    path = tmp_path / "udp.jsonl"
    path.write_bytes(b"\n".join([udp("00.1", False, 50000), udp("00.2", True, 50000),
                                 udp("00.3", False, 50001)]) + b"\n")  # fmt: skip
    assert_same(path, monkeypatch)
    table, _ = _read(path, monkeypatch, True)
    assert table.column("outcome").to_pylist() == ["established", "unknown"]
