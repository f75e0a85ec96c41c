"""The dirty-window sample (sample_flows/.dirty-window/hubble.jsonl.gz): up to date, and what
`recommend` learns from it: the ordinary traffic and the CronJob, not the traps."""

from __future__ import annotations

from pathlib import Path

from recommender import recommend
from recommender.samples.dirty import EXFIL_ADDRESS, write_dirty_window

SAMPLE = Path(__file__).resolve().parents[2] / "sample_flows" / ".dirty-window" / "hubble.jsonl.gz"


def test_the_sample_is_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "dirty.jsonl.gz"
    write_dirty_window(fresh)
    assert fresh.read_bytes() == SAMPLE.read_bytes(), (
        "sample_flows/.dirty-window/hubble.jsonl.gz is stale: python -m recommender.samples.dirty "
        "sample_flows/.dirty-window/hubble.jsonl.gz"
    )


def _rules(rec, workload: str) -> set[tuple[str, str]]:
    return {
        (peer, port)
        for r in rec.findings.rules
        if r.workload == workload and r.direction == "egress"
        for peer in r.peers
        for port in r.ports
    }


def test_what_is_learned_from_the_dirty_window() -> None:
    rec = recommend(SAMPLE)
    report = rec.report
    # The scan: one finding, its targets get no rule; debug's DNS and its steady call remain.
    (scan,) = report["anomalies"]["scans"]
    assert scan["source"] == "shop/debug" and scan["refused"] == 27 and scan["answered"] == 2
    debug = _rules(rec, "debug")
    assert debug == {("app=api", "TCP/8080"), ("kube-system/k8s-app=kube-dns", "TCP/53"),
                     ("kube-system/k8s-app=kube-dns", "UDP/53")}  # fmt: skip
    # The wrong port: attempted, never established, no rule.
    never = {(x["source"], x["destination"], x["port"])
             for x in report["never_established"]["items"]}  # fmt: skip
    assert ("shop/api", "shop/db", 5433) in never
    assert ("app=db", "TCP/5433") not in _rules(rec, "api")
    assert ("app=db", "TCP/5432") in _rules(rec, "api")
    # The raw-IP egress of one web replica: excluded, with its statistic.
    (exfil,) = [x for x in report["anomalies"]["items"] if x["rule"] == "sibling-deviation"]
    assert exfil["destination"] == f"external:{EXFIL_ADDRESS}" and "chance" in exfil["reason"]
    assert not any(EXFIL_ADDRESS in peer for peer, _ in _rules(rec, "web"))
    # The CronJob: one policy for all its runs, its database and DNS.
    names = {p.name for p in rec.policy_set.policies}
    assert "allow-nightly-report" in names
    assert ("app=db", "TCP/5432") in _rules(rec, "nightly-report")
    # And the self-check sees everything, with nothing wrong.
    check = report["self_check"]
    assert check["passed"] and check["coverage"] == 1.0
    assert check["excluded_on_purpose"]["by_reason"]["never-established"]["edges"] == 28
