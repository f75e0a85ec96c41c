"""Fuzzing the flow readers with mutated real records, and re-reading a saved corpus on every run.

Each format's strategy takes real records (``sample_flows/``, ``tests/data/goldmane/``, and the
third-party captures in ``../shared/datasets`` when present), parses them, and mutates them:
fields replaced, dropped or retyped at random paths, huge strings, deep nesting, unicode,
NaN-like and out-of-range numbers; then the serialised bytes themselves: truncated, keys
duplicated, invalid UTF-8, bare ``NaN``/``Infinity`` tokens. Whatever the file holds, reading
it raises nothing but :class:`~recommender.errors.RecommenderError`, the ledger balances, and
every row of the table is a ``used`` record of the ledger.

The corpus in ``corpus/<format>/`` is written by this module (deterministically, from the files
of this repository only)::

    python tests/fuzz/test_fuzz_readers.py          # rewrites tests/fuzz/corpus/

and every corpus file is read again by :func:`test_corpus_file` on every CI run.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import IngestLedger, RecommenderError, read_flows

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPUS = HERE / "corpus"
DATASETS = ROOT.parent / "shared" / "datasets"
GOLDMANE = ROOT / "tests" / "data" / "goldmane"
FORMATS = ("hubble", "calico", "goldmane", "whisker")
CORPUS_FILES_PER_FORMAT = 50
CORPUS_MAX_BYTES = 2 << 20


def _lines(path: Path, limit: int) -> list[str]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    out: list[str] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(line.strip())
            if len(out) >= limit:
                break
    return out


def _local_records(fmt: str) -> list[str]:
    """Real records from this repository (so the tests never need ../shared)."""
    if fmt == "hubble":
        return _lines(ROOT / "sample_flows" / "hubble.jsonl.gz", 60)
    if fmt == "calico":
        return _lines(ROOT / "sample_flows" / "calico.jsonl.gz", 60)
    if fmt == "goldmane":
        return [
            line
            for name in ("emitter.ndjson", "protojson.ndjson", "flowresult.ndjson")
            for line in _lines(GOLDMANE / name, 20)
        ]
    return _lines(GOLDMANE / "whisker.jsonl", 20)


def _shared_records(fmt: str) -> list[str]:
    """Real records of the third-party captures, when ../shared is beside this checkout."""
    patterns = {
        "hubble": [
            ("hubble-otel-testdata", "*.json"),
            ("cilium-starwars-demo", "*.jsonl"),
        ],
        "calico": [("calico-enterprise-docs", "*.jsonl")],
    }.get(fmt, [])
    out: list[str] = []
    for folder, pattern in patterns:
        for path in sorted((DATASETS / folder).glob(pattern)):
            out.extend(_lines(path, 15))
    return out


RECORDS = {fmt: _local_records(fmt) for fmt in FORMATS}
assert all(RECORDS.values()), "the local sample records are missing"


# ---------------------------------------------------------------------------------------------
# Mutations, driven by a random.Random (hypothesis's st.randoms(), or a seeded one for the corpus)
# ---------------------------------------------------------------------------------------------

_STRINGS = [
    "",
    "-",
    " ",
    "null",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "0x10",
    "../../etc/passwd",
    "kube-system\n",
    "<script>alert(1)</script>",
    "!!python/object:os.system",
    "&a",
    "*a",
    "a: b",
    "{}",
    "\u210c\U0001d532\U0001d51f\U0001d51f\U0001d529\U0001d522",  # Fraktur "Hubble"
    "\u202e\u0000\ud7ff\ufeff",
    "k8s:app=",
    "=",
    "k8s:=v",
    "app=web=x",
    "10.0.0.256",
    "::ffff:1.2.3.4",
    "2026-13-45T25:61:61Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "TCP",
    "tcp",
    "allow",
    "deny",
    "DROPPED",
    "src",
    "dst",
]
_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    65535,
    65536,
    -65536,
    2**31,
    2**63 - 1,
    2**64,
    -(2**63),
    10**30,
    0.5,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    1.0,
    True,
    False,
]


def _random_value(rng: random.Random, depth: int = 0, huge: int = 200_000) -> Any:
    kind = rng.randrange(10)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice(_NUMBERS)
    if kind == 2:
        return rng.choice(_STRINGS)
    if kind == 3:
        return rng.choice('aé€𝄞<\n"\\') * rng.randrange(1, huge)
    if kind == 4:
        return (
            "".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(rng.randrange(1, 40)))
            .encode("utf-8", "replace")
            .decode("utf-8", "replace")
        )
    if kind == 5 and depth < 3:
        return [_random_value(rng, depth + 1, huge) for _ in range(rng.randrange(0, 4))]
    if kind == 6 and depth < 3:
        return {
            rng.choice([*_STRINGS, "labels", "flow", "Key", "source", "time"]): _random_value(
                rng, depth + 1, huge
            )
            for _ in range(rng.randrange(0, 4))
        }
    if kind == 7:
        nested: Any = rng.choice(_STRINGS)
        for _ in range(rng.randrange(1, 400)):
            nested = [nested] if rng.random() < 0.5 else {"a": nested}
        return nested
    if kind == 8:
        return rng.randrange(-(2**70), 2**70)
    return rng.random() * 10 ** rng.randrange(-30, 30)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``obj`` (dict keys and list indexes), 12 levels deep."""
    out = [prefix] if prefix else []
    if len(prefix) >= 12:
        return out
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out.extend(_paths(value, (*prefix, index)))
    return out


def _retype(value: Any, rng: random.Random) -> Any:
    choices: list[Any] = [
        str(value),
        [value],
        {"value": value},
        None,
        len(str(value)),
        float(len(str(value))) + 0.5,
        bool(value),
    ]
    if isinstance(value, str) and value.isdigit():
        choices.append(int(value))
    return rng.choice(choices)


def mutate_record(record: Any, rng: random.Random, huge: int = 200_000) -> Any:
    """Replace, drop or retype values at random paths of a parsed record (a new object)."""
    record = json.loads(json.dumps(record))
    for _ in range(rng.randrange(1, 5)):
        paths = _paths(record)
        if not paths:
            return _random_value(rng, huge=huge)
        path = rng.choice(paths)
        parent = record
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        op = rng.randrange(4)
        if op == 0:
            parent[last] = _random_value(rng, huge=huge)
        elif op == 1:
            del parent[last]
        elif op == 2:
            parent[last] = _retype(parent[last], rng)
        elif isinstance(parent, dict):  # an unknown key beside the known ones
            parent[rng.choice(_STRINGS) + "x"] = _random_value(rng, huge=huge)
    return record


def mutate_bytes(line: bytes, rng: random.Random) -> bytes:
    """Damage the serialised record itself."""
    op = rng.randrange(8)
    if op == 0 and line:  # truncated
        return line[: rng.randrange(len(line))]
    if op == 1 and line.startswith(b"{") and b":" in line:  # a duplicate key
        end = line.index(b":")
        key = line[1:end]
        return b"{" + key + b':"duplicate",' + line[1:]
    if op == 2 and line:  # invalid UTF-8
        at = rng.randrange(len(line))
        return line[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]) + line[at:]
    if op == 3:  # bare NaN / Infinity tokens where a number was
        for token in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"01", b"+1"):
            if rng.random() < 0.5:
                return line.replace(b":0", b":" + token, 1).replace(b":1", b":" + token, 1)
        return line.replace(b"true", b"NaN", 1)
    if op == 4:  # two records on one line, or a record and rubbish
        return line + rng.choice([b" " + line, b",", b"]", b" {", b"\r"])
    if op == 6 and b":" in line:  # a value nested far deeper than any decoder's stack
        at = line.index(b":") + 1
        depth = rng.randrange(1000, 20_000)
        return line[:at] + b"[" * depth + b"1" + b"]" * depth + b"," + line[at:]
    if op == 5:  # a random byte flipped
        if line:
            at = rng.randrange(len(line))
            return line[:at] + bytes([rng.randrange(256)]) + line[at + 1 :]
        return line
    return line


def mutated_file(fmt: str, rng: random.Random, records: list[str], huge: int = 200_000) -> bytes:
    """A file of real and mutated records of ``fmt`` (the first line intact, for detection)."""
    lines = [rng.choice(records).encode()]
    for _ in range(rng.randrange(1, 4)):
        record = json.loads(rng.choice(records))
        if rng.random() < 0.8:
            record = mutate_record(record, rng, huge)
        line = json.dumps(record, ensure_ascii=rng.random() < 0.5).encode()
        if rng.random() < 0.4:
            line = mutate_bytes(line, rng)
        lines.append(line.replace(b"\n", b" "))
    if rng.random() < 0.3:
        lines.append(rng.choice(records).encode())
    data = b"\n".join(lines)
    if rng.random() < 0.2:  # the last line cut short, without a newline
        return data[: rng.randrange(len(lines[0]), len(data) + 1)]
    return data + b"\n"


# ---------------------------------------------------------------------------------------------
# The check every fuzzed and corpus file must pass
# ---------------------------------------------------------------------------------------------


def check_file(path: Path, fmt: str | None) -> None:
    """Read ``path``: only RecommenderError may escape; every record is accounted for."""
    ledger = IngestLedger()
    try:
        table = read_flows(path, format=fmt, ledger=ledger, workers=1)
    except RecommenderError:
        return
    except Exception as exc:  # pragma: no cover - the failure this test exists to find
        raise AssertionError(f"{path} ({fmt}): {type(exc).__name__}: {exc}") from exc
    assert ledger.balanced, ledger.to_dict()
    assert table.num_rows == ledger.used, (table.num_rows, ledger.to_dict())
    assert ledger.read >= 1


_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("fmt", FORMATS)
@_SETTINGS
@given(data=st.data())
def test_mutated_real_records(tmp_path: Path, fmt: str, data: st.DataObject) -> None:
    rng = data.draw(st.randoms(use_true_random=False))
    path = tmp_path / f"fuzz-{fmt}.json"
    path.write_bytes(mutated_file(fmt, rng, RECORDS[fmt]))
    check_file(path, fmt)
    check_file(path, None)  # detection, then whichever reader it picks


@pytest.mark.parametrize("fmt", ["hubble", "calico"])
@_SETTINGS
@given(data=st.data())
def test_mutated_shared_records(tmp_path: Path, fmt: str, data: st.DataObject) -> None:
    records = _shared_records(fmt)
    if not records:
        pytest.skip("../shared/datasets is not beside this checkout")
    rng = data.draw(st.randoms(use_true_random=False))
    path = tmp_path / f"fuzz-{fmt}.json"
    path.write_bytes(mutated_file(fmt, rng, records))
    check_file(path, fmt)


# ---------------------------------------------------------------------------------------------
# The saved corpus
# ---------------------------------------------------------------------------------------------


def write_corpus(folder: Path = CORPUS) -> list[Path]:
    """Write ``CORPUS_FILES_PER_FORMAT`` mutated files per format (deterministic)."""
    if folder.exists():
        shutil.rmtree(folder)
    written: list[Path] = []
    for fmt in FORMATS:
        (folder / fmt).mkdir(parents=True)
        for index in range(CORPUS_FILES_PER_FORMAT):
            rng = random.Random(f"{fmt}-{index}")
            path = folder / fmt / f"{index:03d}.json"
            path.write_bytes(mutated_file(fmt, rng, RECORDS[fmt], huge=3000))
            written.append(path)
    return written


CORPUS_FILES = sorted(CORPUS.glob("*/*.json"))


@pytest.mark.parametrize(
    "path", CORPUS_FILES, ids=[f"{p.parent.name}/{p.name}" for p in CORPUS_FILES]
)
def test_corpus_file(path: Path) -> None:
    check_file(path, path.parent.name)
    check_file(path, None)


def test_corpus_is_complete_and_small() -> None:
    for fmt in FORMATS:
        assert len(list((CORPUS / fmt).glob("*.json"))) == CORPUS_FILES_PER_FORMAT, fmt
    assert sum(p.stat().st_size for p in CORPUS_FILES) < CORPUS_MAX_BYTES


def test_corpus_generator_is_deterministic(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    again = {str(p.relative_to(folder)): p.read_bytes() for p in write_corpus(folder)}
    assert again == {str(p.relative_to(CORPUS)): p.read_bytes() for p in CORPUS_FILES}


if __name__ == "__main__":
    files = write_corpus()
    size = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {size:,} bytes, to {CORPUS}", file=sys.stderr)
