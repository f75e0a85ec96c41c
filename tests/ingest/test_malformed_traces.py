"""Malformed staged-rollout traces (issue 20): a pending or audit policy trace that cannot be
read whole is counted in the ledger's ``malformed_traces`` by field, the flow is still read
(never skipped, never a traceback), and the row keeps what could be read of the trace.

Fixtures are the hand-written records of the format tests with the trace fields broken in the
ways a log can break them: the wrong JSON type, entries of the wrong type, strings that are not
Calico policy strings, hits without a name or with an unknown action."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import IngestLedger, read_flows
from recommender.ingest._flowlog import policy_string_ok

DATA = Path(__file__).resolve().parents[1] / "data"
GOOD = "0|default|shop/staged:default.allow-db|deny|-1"


def _read(path: Path, fmt: str | None = None) -> tuple[list[dict[str, Any]], IngestLedger]:
    ledger = IngestLedger()
    rows = read_flows(path, format=fmt, ledger=ledger).to_pylist()
    assert ledger.balanced
    return sorted(rows, key=lambda r: r["dst_port"] or 0), ledger


def _calico(port: int, pending: Any) -> dict[str, Any]:
    base = json.loads((DATA / "calico" / "node-a.jsonl").read_text().splitlines()[0])
    policies = {"enforced_policies": ["0|default|shop/default.allow|allow|0"]}
    if pending is not ...:
        policies["pending_policies"] = pending
    return {**base, "dest_port": port, "policies": policies}


CALICO_CASES: list[tuple[Any, bool]] = [
    (..., False),  # no pending trace
    ([GOOD], False),
    ([], False),
    ({"not": "a list"}, True),
    ([GOOD, 7], True),  # an entry that is not a string (left out)
    (["garbage"], True),  # a string that is not a policy string (kept, decides nothing)
    (["x|t|n|allow|0"], True),
    (["0|t|ns/p|maybe|0"], True),
    (12, True),
]


@pytest.mark.parametrize("shape", ["lines", "document"])
def test_calico_pending_policies_malformed_are_counted(tmp_path: Path, shape: str) -> None:
    """Both of the Calico reader's paths (a line at a time, and a JSON document)."""
    records = [_calico(1000 + i, pending) for i, (pending, _) in enumerate(CALICO_CASES)]
    path = tmp_path / ("flows.jsonl" if shape == "lines" else "flows.json")
    if shape == "lines":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=2))
    rows, ledger = _read(path, "calico")
    assert ledger.used == len(CALICO_CASES) and not ledger.skipped
    assert dict(ledger.malformed_traces) == {
        "pending_policies": sum(bad for _, bad in CALICO_CASES)
    }
    assert ledger.to_dict()["malformed_traces"] == {"pending_policies": 6}
    by_port = {r["dst_port"]: r["policies"] for r in rows}
    assert by_port[1001] == ["0|default|shop/default.allow|allow|0", f"pending:{GOOD}"]
    assert by_port[1003] == ["0|default|shop/default.allow|allow|0"]
    assert by_port[1004] == ["0|default|shop/default.allow|allow|0", f"pending:{GOOD}"]
    assert by_port[1005][-1] == "pending:garbage"


def test_calico_the_same_trace_counted_once_per_record(tmp_path: Path) -> None:
    """The fast path caches a record's tail by its raw fields: a repeated malformed trace is
    still counted for every record that carries it."""
    records = [_calico(2000 + i, ["garbage"]) for i in range(5)]
    path = tmp_path / "flows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    _, ledger = _read(path, "calico")
    assert ledger.malformed_traces == {"pending_policies": 5}


def _goldmane(port: int, pending: Any, key: str = "pending_policies") -> dict[str, Any]:
    base = json.loads((DATA / "goldmane" / "emitter.ndjson").read_text().splitlines()[0])
    rec = copy.deepcopy(base)
    rec["Key"]["dest_port"] = port
    rec["Key"]["policies"].pop("pending_policies", None)
    if pending is not ...:
        rec["Key"]["policies"][key] = pending
    return rec


HIT = {"kind": 3, "name": "default.allow-db", "namespace": "shop", "tier": "default",
       "action": 2, "policy_index": 0, "rule_index": -1}  # fmt: skip
GOLDMANE_CASES: list[tuple[Any, bool]] = [
    (..., False),
    ([HIT], False),
    ("not a list", True),
    ([HIT, "not an object"], True),  # the string is left out
    ([{**HIT, "name": ""}], True),  # no name
    ([{**HIT, "action": "sideways"}], True),
    ({"kind": 3}, True),
]


def test_goldmane_pending_traces_malformed_are_counted(tmp_path: Path) -> None:
    records = [_goldmane(3000 + i, p) for i, (p, _) in enumerate(GOLDMANE_CASES)]
    path = tmp_path / "goldmane.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows, ledger = _read(path, "goldmane")
    assert ledger.used == len(GOLDMANE_CASES) and not ledger.skipped
    assert ledger.malformed_traces == {"pending_policies": 5}
    by_port = {r["dst_port"]: r["policies"] for r in rows}
    staged = "pending:0|default|shop/staged:default.allow-db|deny|-1"
    assert by_port[3001][-1] == staged
    assert by_port[3003][-1] == staged  # the well-formed hit kept, the string left out
    assert not any(p.startswith("pending:") for p in by_port[3002])


def test_whisker_pending_malformed_is_counted(tmp_path: Path) -> None:
    base = json.loads((DATA / "goldmane" / "whisker.jsonl").read_text().splitlines()[0])
    good = {"kind": "StagedNetworkPolicy", "name": "default.allow-db", "namespace": "shop",
            "tier": "default", "action": "Deny", "policy_index": 0, "rule_index": -1}  # fmt: skip
    records = []
    for i, pending in enumerate([[good], [], [good, 3], "x", [{**good, "action": None}]]):
        rec = copy.deepcopy(base)
        rec["dest_port"] = 4000 + i
        rec["policies"]["pending"] = pending
        records.append(rec)
    path = tmp_path / "whisker.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows, ledger = _read(path, "whisker")
    assert ledger.used == 5 and not ledger.skipped
    assert ledger.malformed_traces == {"pending": 3}
    assert rows[0]["policies"][-1] == "pending:0|default|shop/staged:default.allow-db|deny|-1"


def _hubble(port: int, **fields: Any) -> str:
    flow = {
        "time": "2026-01-05T09:00:00.000000001Z",
        "verdict": "AUDIT",
        "IP": {"source": "10.0.0.1", "destination": "10.0.0.2", "ipVersion": "IPv4"},
        "l4": {"TCP": {"source_port": port, "destination_port": 80, "flags": {"SYN": True}}},
        "source": {"namespace": "a", "pod_name": "client-7d4b9c8f6b-x2x4z",
                   "labels": ["k8s:app=client"]},
        "destination": {"namespace": "a", "pod_name": "server-0", "labels": ["k8s:app=server"]},
        "Type": "L3_L4",
        "is_reply": False,
        **fields,
    }  # fmt: skip
    return json.dumps({"flow": flow, "node_name": "n1", "time": flow["time"]})


POLICY = {"name": "db", "namespace": "shop", "kind": "CiliumNetworkPolicy"}


@pytest.mark.parametrize("scanner", ["1", ""])
def test_hubble_denied_by_and_match_type_malformed_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scanner: str
) -> None:
    """Audited and dropped flows with broken ``*_denied_by`` / ``policy_match_type``: read,
    counted per field, the well-formed policies kept (the compiled scanner and pure Python)."""
    if not scanner:
        monkeypatch.setenv("RECOMMENDER_NO_SCANNER", "1")
    lines = [
        _hubble(41000, ingress_denied_by=[POLICY], policy_match_type=2),  # well-formed
        _hubble(41001, ingress_denied_by="shop/db"),
        _hubble(41002, egress_denied_by=[POLICY, 5, {"name": ["x"]}]),
        _hubble(41003, policy_match_type={"type": 2}),
        _hubble(41004, ingress_denied_by=None, egress_denied_by=[]),  # empty, not malformed
        _hubble(41005, verdict="DROPPED", ingress_denied_by={"name": "db"},
                policy_match_type=[1]),
        _hubble(41006, verdict="FORWARDED", ingress_denied_by="ignored: not denied"),
        # a connection's later AUDIT event, broken: it still wins over FORWARDED, and counts
        _hubble(41007, verdict="FORWARDED"),
        _hubble(41007, egress_denied_by=[{"name": 1}]),
    ]  # fmt: skip
    path = tmp_path / "hubble.json"
    path.write_text("\n".join(lines) + "\n")
    ledger = IngestLedger()
    rows = read_flows(path, format="hubble", ledger=ledger).to_pylist()
    assert ledger.balanced and not ledger.skipped
    assert (ledger.used, ledger.duplicate) == (8, 1)
    assert ledger.malformed_traces == {
        "ingress_denied_by": 2, "egress_denied_by": 2, "policy_match_type": 2,
    }  # fmt: skip
    by_port = {r["src_port"]: (r["verdict"], r["policies"]) for r in rows}
    assert by_port[41000] == (
        "audit", ["denied-by:ingress|CiliumNetworkPolicy|shop/db", "policy-match:2"]
    )
    assert by_port[41001] == ("audit", None)
    assert by_port[41002] == ("audit", ["denied-by:egress|CiliumNetworkPolicy|shop/db"])
    assert by_port[41005] == ("denied", None)
    assert by_port[41006] == ("allowed", None)
    assert by_port[41007] == ("audit", None)


def test_the_counter_merges_and_reaches_the_report_ledger() -> None:
    a, b = IngestLedger(), IngestLedger()
    a.malformed_trace("pending_policies")
    b.malformed_trace("ingress_denied_by,policy_match_type")
    a.merge(b)
    assert a.to_dict()["malformed_traces"] == {
        "ingress_denied_by": 1, "pending_policies": 1, "policy_match_type": 1,
    }  # fmt: skip
    from recommender.report.markdown import _input

    lines = "\n".join(_input({"ingest": a.to_dict()}))
    assert "malformed trace (pending_policies): 1" in lines


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pending=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                     max_size=3),
        max_leaves=6,
    )
)
def test_any_pending_value_is_read_and_accounted(pending: Any) -> None:
    """Whatever the pending trace holds, the record is used and counted at most once: never
    when the trace is absent, empty or a list of policy strings, always when it is not a list
    (nor a string)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flows.jsonl"
        path.write_text(json.dumps(_calico(5000, pending)) + "\n")
        rows, ledger = _read(path, "calico")
    assert ledger.used == 1 and not ledger.skipped and len(rows) == 1
    counted = ledger.malformed_traces.get("pending_policies", 0)
    assert counted in (0, 1)
    if pending is None or pending == [] or (
        isinstance(pending, list) and all(isinstance(p, str) and policy_string_ok(p)
                                          for p in pending)
    ):
        assert counted == 0
    elif not isinstance(pending, list | str):
        assert counted == 1


def test_every_pending_and_audit_field_round_trips_through_canonical_parquet(
    tmp_path: Path,
) -> None:
    """The staged evidence of every reader (Calico pending_policies, Goldmane and Whisker
    pending traces, Hubble AUDIT with *_denied_by and policy_match_type), and the ledger with
    its malformed_traces, come back unchanged from the canonical Parquet `recommend ingest`
    writes."""
    from recommender import iter_flow_batches
    from recommender.evaluation.staged import staged_verdict
    from recommender.ingest._write import write_flows_parquet

    calico = tmp_path / "calico.jsonl"
    calico.write_text(json.dumps(_calico(1000, [GOOD])) + "\n" + json.dumps(_calico(1001, 3)))
    goldmane = tmp_path / "goldmane.ndjson"
    goldmane.write_text(json.dumps(_goldmane(3000, [HIT])) + "\n")
    whisker = tmp_path / "whisker.jsonl"
    rec = json.loads((DATA / "goldmane" / "whisker.jsonl").read_text().splitlines()[0])
    rec["policies"]["pending"] = [{"kind": "StagedNetworkPolicy", "name": "default.p",
                                   "namespace": "shop", "tier": "default", "action": "Allow",
                                   "policy_index": 1, "rule_index": 2}]  # fmt: skip
    whisker.write_text(json.dumps(rec) + "\n")
    hubble = tmp_path / "hubble.json"
    hubble.write_text(
        _hubble(41000, ingress_denied_by=[POLICY], policy_match_type=2) + "\n"
        + _hubble(41001, verdict="DROPPED", egress_denied_by=[POLICY], policy_match_type="x")
        + "\n" + _hubble(41002, ingress_denied_by="broken") + "\n"
    )
    inputs = [calico, goldmane, whisker, hubble]
    batches = iter_flow_batches(inputs)
    write_flows_parquet(batches, tmp_path / "flows.parquet", ledger=batches.ledger)
    direct = IngestLedger()
    first = read_flows(inputs, ledger=direct).to_pylist()
    again_ledger = IngestLedger()
    again = read_flows(tmp_path / "flows.parquet", ledger=again_ledger)
    import pyarrow.parquet as pq

    written = pq.read_schema(tmp_path / "flows.parquet").metadata[b"recommender.ledger"]
    meta = json.loads(written)  # the ingest ledger the file carries
    assert meta["malformed_traces"] == {"ingress_denied_by": 1, "pending_policies": 1}

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["source_format"], r["dst_port"] or 0, r["src_port"] or 0)

    fields = ("verdict", "policies", "source_format")
    assert [{f: r[f] for f in fields} for r in sorted(again.to_pylist(), key=key)] == [
        {f: r[f] for f in fields} for r in sorted(first, key=key)
    ]
    verdicts = [
        (r["source_format"], staged_verdict(r["policies"], r["verdict"]))
        for r in sorted(again.to_pylist(), key=key)
    ]
    assert verdicts == [
        ("calico", ("deny", "shop/staged:default.allow-db", -1)),
        ("calico", None),  # the malformed trace decides nothing
        ("goldmane", ("deny", "shop/staged:default.allow-db", -1)),
        ("hubble", ("deny", "shop/db", -2)),
        ("hubble", None),  # a drop is enforced, not staged
        ("hubble", ("deny", "", -2)),  # AUDIT with a broken denied_by: still a would-deny
        ("whisker", ("allow", "shop/staged:default.p", 2)),
    ]


def test_recommend_ingest_prints_the_counter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recommender.cli import main

    path = tmp_path / "flows.jsonl"
    path.write_text(json.dumps(_calico(1000, ["garbage"])) + "\n")
    assert main(["ingest", str(path), "-o", str(tmp_path / "flows.parquet")]) == 0
    out = capsys.readouterr().out
    assert "malformed trace (pending_policies): 1" in out
    assert "Traceback" not in out
