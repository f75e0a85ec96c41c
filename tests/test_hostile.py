"""Hostile input: flow logs and policy files written by an attacker.

Flow logs carry attacker-influenced values (labels, names, namespaces, DNS names, HTTP paths);
policy files given to ``evaluate``/``diff`` may come from anywhere. Whatever they hold, the
tool raises nothing but :class:`~recommender.errors.RecommenderError`, accounts for every
record in the ledger, stays within bounded time and memory, and writes nothing invalid.
See SECURITY.md.
"""

from __future__ import annotations

import gzip
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml
from conftest import flow_row, make_table

from recommender import IngestLedger, RecommenderError, detect_format, read_flows, recommend
from recommender.errors import FlowSourceError, InputError
from recommender.policy.reader import read_policies

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_flows"
GOLDMANE = ROOT / "tests" / "data" / "goldmane"
VALIDATOR = ROOT.parent / "shared" / "tools" / "validate_manifests.py"

DEEP = 100_000


def _first_line(path: Path) -> str:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return str(fh.readline()).rstrip("\n")


FIRST = {
    "hubble": _first_line(SAMPLES / "hubble.jsonl.gz"),
    "calico": _first_line(SAMPLES / "calico.jsonl.gz"),
    "goldmane": _first_line(GOLDMANE / "emitter.ndjson"),
    "whisker": _first_line(GOLDMANE / "whisker.jsonl"),
}


def _read(path: Path, fmt: str | None) -> IngestLedger:
    """Read ``path``: a RecommenderError is an accepted answer; the ledger must balance."""
    ledger = IngestLedger()
    try:
        read_flows(path, format=fmt, ledger=ledger, workers=1)
    except RecommenderError:
        return ledger
    assert ledger.balanced, ledger.to_dict()
    return ledger


# ---------------------------------------------------------------------------------------------
# Deep nesting: a ledger skip (or a RecommenderError for a whole document), never RecursionError
# ---------------------------------------------------------------------------------------------

_NESTED = {
    "array": "[" * DEEP + "]" * DEEP,
    "open-array": "[" * DEEP,
    "in-flow": '{"flow":' + "[" * DEEP + "]" * DEEP + "}",
    "unknown-key": '{"x":' + "[" * DEEP + "]" * DEEP + "}",
    "in-endpoint": '{"flow":{"source":' + '{"a":' * DEEP + "1" + "}" * DEEP + "}}",
    "objects": '{"a":' * DEEP + "1" + "}" * DEEP,
}


@pytest.mark.parametrize("fmt", sorted(FIRST))
@pytest.mark.parametrize("kind", sorted(_NESTED))
def test_deep_nesting_is_skipped_with_a_reason(tmp_path: Path, fmt: str, kind: str) -> None:
    path = tmp_path / "deep.json"
    path.write_text(FIRST[fmt] + "\n" + _NESTED[kind] + "\n" + FIRST[fmt] + "\n")
    ledger = _read(path, fmt)
    if ledger.read:  # read as lines: the valid lines around it are kept
        assert ledger.read >= 3 and ledger.skipped_total >= 1 and ledger.used >= 1
    alone = tmp_path / "alone.json"
    alone.write_text(_NESTED[kind])  # the whole file is one deep document
    _read(alone, fmt)


@pytest.mark.parametrize("kind", sorted(_NESTED))
def test_deep_nesting_detection(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "deep.json"
    path.write_text(_NESTED[kind])
    with pytest.raises(FlowSourceError):
        detect_format(path)
    with pytest.raises(FlowSourceError):
        read_flows(path)


# ---------------------------------------------------------------------------------------------
# Policy files: no object construction, no alias expansion, no deep recursion
# ---------------------------------------------------------------------------------------------

_POLICY_HEAD = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: p
  namespace: d
"""


def _laughs(levels: int = 9) -> str:
    lines = ["x-laughs:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['echo pwned > /tmp/pwned']\n",
        _POLICY_HEAD + "spec: !!python/object:os.system {}\n",
        _POLICY_HEAD + "spec:\n  podSelector: !!python/name:os.system ''\n",
        "!!python/object/new:subprocess.Popen [['true']]\n",
    ],
    ids=["apply", "object", "name", "new"],
)
def test_python_tags_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match="cannot be parsed"):
        read_policies(path)


@pytest.mark.parametrize(
    "where",
    [
        "spec:\n  podSelector:\n    matchLabels: {app: *a6}\n",  # str() would expand 10^7
        "spec:\n  podSelector: {}\n  ingress:\n  - from: *a9\n",
        "spec:\n  podSelector: {}\n",  # unused: refused all the same
    ],
    ids=["label-value", "peers", "unused"],
)
def test_billion_laughs_is_refused_quickly(tmp_path: Path, where: str) -> None:
    # Limits in this file are hang guards (an expansion or a quadratic scan would take minutes),
    # not performance goals: CPU time of this process, generous, so a loaded machine passes.
    path = tmp_path / "p.yaml"
    path.write_text(_laughs() + "---\n" + _POLICY_HEAD + _laughs() + where)
    started = time.process_time()
    with pytest.raises(InputError, match="alias"):
        read_policies(path)
    assert time.process_time() - started < 5


def test_scalar_aliases_are_allowed_up_to_a_limit(tmp_path: Path) -> None:
    spec = "spec:\n  podSelector:\n    matchLabels: {app: &v web, tier: *v}\n"
    path = tmp_path / "p.yaml"
    path.write_text(_POLICY_HEAD + spec)
    (policy,) = read_policies(path).policies
    assert dict(policy.selector.match_labels) == {"app": "web", "tier": "web"}
    many = "  x: &v web\n" + "".join(f"  y{i}: *v\n" for i in range(101))
    path.write_text(_POLICY_HEAD + "  annotations:\n" + many.replace("  ", "    ") + spec)
    with pytest.raises(InputError, match="more than 100 YAML aliases"):
        read_policies(path)


def test_deeply_nested_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(_POLICY_HEAD + "spec: " + "[" * DEEP + "]" * DEEP + "\n")
    with pytest.raises(InputError, match="nested too deeply"):
        read_policies(path)


# ---------------------------------------------------------------------------------------------
# Hostile strings end to end: recommend() and write() keep every one out of the manifests
# ---------------------------------------------------------------------------------------------

HOSTILE_NAMESPACES = ["../../etc", "kube-system\n", "a" * 300, "Shop", "x/y", "<script>"]
HOSTILE_LABELS: list[dict[str, str]] = [
    {"app": "w0", "line\nbreak": "v"},
    {"app": "w1", "k": "line\nbreak"},
    {"app": "w2", "k": "a: b"},
    {"app": "w3", "k": "{}"},
    {"app": "w4", "k": "!!python/object:os.system"},
    {"app": "w5", "k": "&a"},
    {"app": "w6", "k": "*a"},
    {"app": "w7", "k": "v" * 300},
    {"app": "w8", "k": "café"},
    {"app": "w9", "évil": "1"},
    {"app": "w10", "k: v": "x"},
    {"app": "w11", "../../k": "x"},
    {"app": "<script>alert(1)</script>"},
]
HOSTILE_WORKLOADS = ["a/b", "..", "x y", "<script>alert(1)</script>", "../../../tmp/x", "é"]
SCRIPT = "<script>alert(1)</script>"


def _hostile_table() -> Any:
    rows = []
    for ns in HOSTILE_NAMESPACES:  # invalid namespaces, either end
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload="client",
                dst_namespace=ns,
                dst_workload="web",
                dst_port=80,
            )
        )
        rows.append(
            flow_row(
                src_namespace=ns,
                src_workload="web",
                dst_namespace="shop",
                dst_workload="client",
                dst_port=8080,
            )
        )
    for i, labels in enumerate(HOSTILE_LABELS):  # one workload per label set
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload="client",
                dst_namespace="shop",
                dst_workload=f"w{i}",
                dst_labels=labels,
                dst_port=80,
            )
        )
    for name in HOSTILE_WORKLOADS:  # no labels: the fallback app=<name> would be invalid
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload="client",
                dst_namespace="shop",
                dst_workload=name,
                dst_labels={},
                dst_port=81,
            )
        )
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload=name,
                src_labels={},
                dst_namespace="shop",
                dst_workload="client",
                dst_port=82,
            )
        )
    rows.append(
        flow_row(
            src_namespace="shop",
            src_workload="client",
            dst_kind="external",
            dst_ip="1.2.3.4",
            dst_port=443,
            dst_dns_names=[f"{SCRIPT}.evil.example"],
            dns_query=f"{SCRIPT}.example",
            http_path=f"/{SCRIPT}",
            http_method="GET<script>",
            l7_protocol="http",
        )
    )
    rows.append(
        flow_row(
            src_namespace="shop",
            src_workload="client",
            dst_namespace="shop",
            dst_workload="web",
            dst_labels={"app": "web"},
            dst_port=80,
            http_path=f"/{SCRIPT}",
            l7_protocol="http",
        )
    )
    return make_table(rows)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def test_hostile_strings_never_reach_a_manifest(tmp_path: Path) -> None:
    result = recommend(_hostile_table())
    out = tmp_path / "out"
    written = result.write(out)

    # Every path stays inside the output folder.
    root = out.resolve()
    for path in written:
        assert path.resolve().is_relative_to(root), path
    assert {p.resolve() for p in out.rglob("*") if p.is_file()} == {p.resolve() for p in written}

    # Invalid values are reported, not written.
    report = result.report
    assert set(report["invalid_namespaces"]) == set(HOSTILE_NAMESPACES)
    bad = {(e["key"], e["value"]) for e in report["invalid_labels"]}
    assert ("line\nbreak", "v") in bad and ("k", "v" * 100) in bad and ("k", "café") in bad
    assert {name for key, name in bad if key == "app"} >= set(HOSTILE_WORKLOADS) | {SCRIPT}

    manifests = result.manifests()
    assert manifests
    for value in (s for m in manifests for s in _strings(m)):
        for needle in ("\n", "..", "<", "/tmp", "python", "é", "a: b", "{}", "*a", "&a", "k: v"):
            assert needle not in value, (needle, value)
        assert len(value) <= 253 or value.startswith("Allow"), value
    assert all(m["metadata"]["namespace"] == "shop" for m in manifests)

    # YAML round-trips: each file holds exactly its manifests.
    by_file: dict[str, list[dict[str, Any]]] = {}
    for m in manifests:
        by_file.setdefault(m["metadata"]["namespace"], []).append(m)
    reread = []
    for path in sorted(out.glob("*/*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        if path.name != "kustomization.yaml":
            reread.extend(docs)
    key = lambda m: (m["metadata"]["namespace"], m["metadata"]["name"])  # noqa: E731
    assert sorted(reread, key=key) == sorted(manifests, key=key)

    # The HTML report escapes every value.
    html = (out / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html

    if VALIDATOR.is_file():
        proc = subprocess.run(
            [sys.executable, str(VALIDATOR), str(out)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# Resource limits: huge lines, many distinct values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["hubble", "calico", "goldmane", "whisker"])
@pytest.mark.parametrize("where", ["string", "key", "raw"])
def test_a_50_mb_line_without_newline_is_bounded(tmp_path: Path, fmt: str, where: str) -> None:
    huge = "a" * (50 << 20)
    body = {
        "string": '{"flow":{"source":{"pod_name":"' + huge + '"}},"source_name":"' + huge + '"}',
        "key": '{"' + huge + '":1}',
        "raw": huge,
    }[where]
    path = tmp_path / "huge.json"
    path.write_text(FIRST[fmt] + "\n" + body)  # no newline at the end
    started = time.process_time()
    ledger = _read(path, fmt)
    assert time.process_time() - started < 30
    if ledger.read:
        assert ledger.read == 2 and ledger.used == 1 and ledger.skipped_total == 1


def test_a_50_mb_file_of_one_line_is_not_detected(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_text('{"x":"' + "a" * (50 << 20))
    started = time.process_time()
    with pytest.raises(FlowSourceError):
        read_flows(path)
    assert time.process_time() - started < 30


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_million_distinct_label_values(tmp_path: Path) -> None:
    """1,000,000 rows of one workload, each pod with its own label value: bounded and quick."""
    n = 1_000_000
    rows = make_table(
        [
            flow_row(
                src_namespace="shop",
                src_workload="client",
                dst_namespace="shop",
                dst_workload="web",
                dst_port=80,
            )
        ]
    )
    table = rows.take(pa.array(np.zeros(n, dtype=np.int64)))
    labels_type = table.schema.field("dst_labels").type
    values = np.empty(2 * n, dtype=object)
    values[0::2] = "web"
    values[1::2] = [f"h{i}" for i in range(n)]
    labels = pa.MapArray.from_arrays(
        pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
        pa.array(["app", "pod-hash"] * n),
        pa.array(values, pa.string()),
    ).cast(labels_type)
    table = table.set_column(table.schema.get_field_index("dst_labels"), "dst_labels", labels)
    before = _max_rss_mb()
    started = time.process_time()
    result = recommend(table)
    assert time.process_time() - started < 90
    assert _max_rss_mb() - before < 1500
    selectors = {m["metadata"]["name"]: m["spec"]["podSelector"] for m in result.manifests()}
    assert selectors["allow-web"] == {"matchLabels": {"app": "web"}}


def test_calico_caches_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recommender.ingest import _flowlog, calico

    cap = 300
    monkeypatch.setattr(_flowlog, "_CACHE_LIMIT", cap)
    monkeypatch.setattr(calico, "_CACHE_LIMIT", cap)
    monkeypatch.setattr(_flowlog, "_LABEL_CACHE", {})
    monkeypatch.setattr(_flowlog, "_WORKLOAD_CACHE", {})
    first = json.loads(FIRST["calico"])
    lines = []
    for i in range(3 * cap):
        rec = dict(first)
        rec["dest_labels"] = {"labels": [f"app=web{i}", f"pod-template-hash=h{i}"]}
        rec["dest_name_aggr"] = f"web{i}-*"
        rec["source_ip"], rec["dest_ip"] = (
            f"10.1.{i // 250}.{i % 250}",
            f"10.2.{i // 250}.{i % 250}",
        )
        lines.append(json.dumps(rec))
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ledger = IngestLedger()
    reader = calico.CalicoReader(ledger)
    ledger.open_file(str(path), "calico")
    rows = sum(b.num_rows for b in reader.read(path)) + sum(b.num_rows for b in reader.finish())
    assert ledger.balanced and ledger.read == 3 * cap and rows == ledger.used
    assert len(_flowlog._LABEL_CACHE) <= cap and len(_flowlog._WORKLOAD_CACHE) <= cap
    for name in ("_protocols", "_tails", "_endpoints"):
        assert len(getattr(reader, name)) <= cap, name


# ---------------------------------------------------------------------------------------------
# Invalid UTF-8 inside strings (msgspec raises UnicodeDecodeError, not a DecodeError)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(FIRST))
@pytest.mark.parametrize("field", ["pod_name", "namespace", "time", "verdict", "source_name"])
def test_invalid_utf8_in_a_string_is_skipped(tmp_path: Path, fmt: str, field: str) -> None:
    first = FIRST[fmt].encode()
    marker = f'"{field}":"'.encode()
    broken = (
        first.replace(marker, marker + b"\xff\xc3(", 1)
        if marker in first
        else first[:-1] + (b',"' + field.encode() + b'":"\xed\xa0\x80"}')
    )
    path = tmp_path / "utf8.json"
    path.write_bytes(first + b"\n" + broken + b"\n" + first + b"\n")
    ledger = _read(path, fmt)
    assert ledger.read in (0, 3)
