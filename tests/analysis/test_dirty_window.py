"""Learning from a dirty window (issue 21): a forwarded scan, one replica's raw-IP egress and a
CronJob's runs are told apart from ordinary traffic, and a sparse capture of a wide mesh (a few
connections per edge, no attack) loses nothing to screening."""

from __future__ import annotations

import random
import zlib
from typing import Any

from conftest import T0, flow_row, make_table, minutes

from recommender import recommend

OUTSIDE = "93.184.216.34"  # a public address (not a documentation range)


def conn(src: str, dst: str, port: int, *, n: int = 1, at: float = 0, pod: str | None = None,
         outcome: str = "established", proto: str = "TCP", kind: str | None = None,
         names: list[str] | None = None) -> dict[str, Any]:
    sns, swl = src.split("/")
    pod = pod or f"{swl}-0"
    row = flow_row(
        src_namespace=sns, src_workload=swl, src_pod=pod, src_workload_kind=kind,
        src_ip=f"10.1.{zlib.crc32(pod.encode()) % 250}.{zlib.crc32(swl.encode()) % 250}",
        protocol=proto, dst_port=port, connections=n, outcome=outcome,
        start_time=T0 + minutes(at), end_time=T0 + minutes(at),
    )  # fmt: skip
    if "/" in dst:
        dns, dwl = dst.split("/")
        row.update(dst_namespace=dns, dst_workload=dwl, dst_labels={"app": dwl})
    else:
        row.update(dst_kind="external", dst_ip=dst, dst_dns_names=names)
    return row


def shop() -> list[dict[str, Any]]:
    """web (3 replicas) -> api -> db, everyone -> coredns; all established."""
    rows = []
    for pod in ("web-a", "web-b", "web-c"):
        rows += [conn("shop/web", "shop/api", 8080, n=30, at=t, pod=pod) for t in (0, 30, 60)]
        rows += [conn("shop/web", "kube-system/coredns", 53, n=10, at=t, pod=pod, proto="UDP")
                 for t in (0, 60)]  # fmt: skip
    rows += [conn("shop/api", "shop/db", 5432, n=40, at=t) for t in (0, 60)]
    rows += [conn("shop/api", "kube-system/coredns", 53, n=10, at=0, proto="UDP")]
    return rows


def rules_of(rec: Any, workload: str) -> set[str]:
    return {f"{r.direction} {','.join(r.peers)} {','.join(r.ports)}"
            for r in rec.findings.rules if r.workload == workload}  # fmt: skip


def forwarded_scan() -> list[dict[str, Any]]:
    """shop/debug, never denied: 3 ports answered, 25 reset; its DNS and its real callee too."""
    rows = [conn("shop/debug", "kube-system/coredns", 53, n=12, at=t, proto="UDP")
            for t in (0, 30, 90)]  # fmt: skip
    rows += [conn("shop/debug", "shop/api", 8080, n=20, at=t) for t in (0, 90)]
    rows += [conn("shop/web", "shop/debug", 9000, n=5, at=t, pod=pod)
             for t in (0, 90) for pod in ("web-a", "web-b", "web-c")]  # fmt: skip
    k = 0
    for dst in ("shop/db", "shop/web", "shop/api"):
        for port in (21, 22, 23, 25, 80, 443, 3306, 5432, 6379, 9200):
            open_ = (dst, port) in {("shop/db", 5432), ("shop/web", 80), ("shop/api", 443)}
            rows.append(conn("shop/debug", dst, port, at=40 + k / 60,
                             outcome="established" if open_ else "failed"))  # fmt: skip
            k += 1
    return rows


def test_a_forwarded_scan_gets_no_rule_but_its_ordinary_traffic_does() -> None:
    rec = recommend(make_table(shop() + forwarded_scan()))
    a = rec.report["anomalies"]
    (finding,) = a["scans"]
    assert finding["source"] == "shop/debug"
    assert (finding["targets"], finding["refused"], finding["answered"]) == (30, 27, 3)
    assert finding["never_established"] == 27 and finding["denied"] == 0
    # The three open ports that answered the scan get no rule; shop/api:8080 (its real
    # callee, 40 connections before and after) and DNS keep theirs, and so does its caller.
    debug = rules_of(rec, "debug")
    ports = {p for r in debug for p in r.split(" ")[-1].split(",")}
    assert not ports & {"TCP/5432", "TCP/80", "TCP/443"}, debug
    assert any("app=api" in r and "TCP/8080" in r for r in debug)
    assert any("UDP/53" in r for r in debug)
    assert any(r.startswith("ingress") and "TCP/9000" in r for r in debug)
    reasons = rec.tables.excluded.column("reason").to_pylist()
    assert reasons.count("never-established") == 27 and reasons.count("anomaly:scan") == 3
    assert "shop/debug probed 30 targets" in rec.report["anomalies"]["scans"][0]["summary"]


def test_never_established_edges_get_no_rule_unless_asked() -> None:
    rows = [*shop(), conn("shop/web", "shop/db", 6379, n=3, at=5, pod="web-b", outcome="failed")]
    rec = recommend(make_table(rows))
    assert not any("6379" in r for r in rules_of(rec, "web"))
    (item,) = rec.report["never_established"]["items"]
    assert (item["source"], item["destination"], item["port"]) == ("shop/web", "shop/db", 6379)
    assert item["connections"] == 3
    kept = recommend(make_table(rows), allow_unestablished=True)
    assert any("6379" in r for r in rules_of(kept, "web"))
    assert kept.report["never_established"]["edges"] == 0
    # One established connection among failed ones: the edge was used, it keeps its rule.
    mixed = [*rows, conn("shop/web", "shop/db", 6379, at=6, pod="web-b")]
    assert any("6379" in r for r in rules_of(recommend(make_table(mixed)), "web"))


def _exfil(n: int, names: list[str] | None = None, port: int = 4444) -> list[dict[str, Any]]:
    return shop() + [conn("shop/web", OUTSIDE, port, n=1, at=20 + k, pod="web-b", names=names)
                     for k in range(n)]  # fmt: skip


def test_one_replica_raw_ip_egress_is_excluded_with_its_statistic() -> None:
    rec = recommend(make_table(_exfil(2)))
    a = rec.report["anomalies"]
    assert a["by_rule"]["sibling-deviation"] == 1
    (item,) = a["items"]
    assert item["destination"] == f"external:{OUTSIDE}" and item["excluded"]
    assert "only pod web-b" in item["reason"] and "2 sibling pods" in item["reason"]
    assert "chance" in item["reason"] and "prior 0.03" in item["reason"]
    assert not any(OUTSIDE in r for r in rules_of(rec, "web"))
    # One connection is never significant; a DNS name or a web port make it ordinary egress.
    for rows in (_exfil(1), _exfil(2, names=["api.example.com"]), _exfil(2, port=443)):
        assert recommend(make_table(rows)).report["anomalies"]["flagged"] == 0


def test_an_internal_peer_needs_many_connections_to_be_a_deviation() -> None:
    def rows(n: int) -> list[dict[str, Any]]:
        return shop() + [conn("shop/web", "shop/vault", 8200, at=20 + k, pod="web-b")
                         for k in range(n)]  # fmt: skip

    # Shares of web's connections are about 1/3 each: 3**(1-n) <= 0.02 from n = 5 on.
    assert recommend(make_table(rows(4))).report["anomalies"]["flagged"] == 0
    item = recommend(make_table(rows(6))).report["anomalies"]["items"][0]
    assert item["rule"] == "sibling-deviation" and item["destination"] == "shop/vault"


def test_cronjob_runs_are_siblings_across_runs_not_concurrently() -> None:
    rows = shop()
    for run, at in (("29383920", 0), ("29384280", 360), ("29384640", 720)):
        pod = f"report-{run}-abcde"
        rows += [conn("shop/report", "shop/db", 5432, n=4, at=at + 1, pod=pod, kind="CronJob"),
                 conn("shop/report", "kube-system/coredns", 53, n=2, at=at, pod=pod,
                      kind="CronJob", proto="UDP")]  # fmt: skip
    # One run talks to the API twice (a different report that night): not significant.
    rows += [conn("shop/report", "shop/api", 8080, n=1, at=721 + k, pod="report-29384640-abcde",
                  kind="CronJob") for k in range(2)]  # fmt: skip
    rec = recommend(make_table(rows))
    assert rec.report["anomalies"]["flagged"] == 0
    assert any("app=api" in r for r in rules_of(rec, "report"))


def sparse_mesh(workloads: int = 250, seed: int = 7) -> list[dict[str, Any]]:
    """A wide mesh seen through a short window: 2 or 3 connections per edge, 2-3 replicas per
    workload (each connection from one of them), DNS to CoreDNS, some outside APIs."""
    rng = random.Random(seed)
    names = [f"svc-{k:03d}" for k in range(workloads)]
    rows = []
    for k, name in enumerate(names):
        replicas = [f"{name}-{r}" for r in range(rng.choice((2, 3)))]
        peers = rng.sample(names[:k] + names[k + 1:], rng.randint(3, 12))
        targets = [(f"mesh/{p}", 8080, "TCP", None) for p in peers]
        targets.append(("kube-system/coredns", 53, "UDP", None))
        if rng.random() < 0.2:
            targets.append((f"52.{k % 200}.1.{k % 250}", 443, "TCP", [f"api{k}.example.com"]))
        for dst, port, proto, dns in targets:
            for _ in range(rng.choice((2, 3))):
                rows.append(conn(f"mesh/{name}", dst, port, at=rng.uniform(0, 10),
                                 pod=rng.choice(replicas), proto=proto, names=dns))  # fmt: skip
    return rows


def test_a_sparse_capture_of_a_wide_mesh_excludes_nothing() -> None:
    rows = sparse_mesh()
    rec = recommend(make_table(rows), namespaces=("mesh",))
    a = rec.report["anomalies"]
    assert a["flagged"] == 0, a["items"][:5]
    assert rec.tables.excluded.num_rows == 0
    check = rec.report["self_check"]
    assert check["coverage"] == 1.0 and check["false_denies"] == 0
    assert check["excluded_on_purpose"]["edges"] == 0


def test_cronjob_runs_judge_only_raw_ip_egress_across_runs() -> None:
    def runs(peer: str, port: int) -> list[dict[str, Any]]:
        rows = shop()
        for run, at in (("29383920", 0), ("29384280", 360), ("29384640", 720)):
            pod = f"report-{run}-abcde"
            rows.append(conn("shop/report", "shop/db", 5432, n=4, at=at + 1, pod=pod,
                             kind="CronJob"))  # fmt: skip
        rows += [conn("shop/report", peer, port, at=721 + k, pod="report-29384640-abcde",
                      kind="CronJob") for k in range(8)]  # fmt: skip
        return rows

    # Eight connections of one run to an internal peer the other runs never used: not flagged.
    assert recommend(make_table(runs("shop/api", 8080))).report["anomalies"]["flagged"] == 0
    # The same to a raw public address: flagged, the runs being its siblings.
    item = recommend(make_table(runs(OUTSIDE, 4444))).report["anomalies"]["items"][0]
    assert item["rule"] == "sibling-deviation" and "runs of the same CronJob" in item["reason"]


def _job_runs(peer: str, port: int, *, kind: str, name: str) -> list[dict[str, Any]]:
    """shop() plus three runs of a CronJob, its pods named as the controller names them, the
    workload as a reader gives it (``name`` may hold ``{run}``); one run also talks to
    ``peer``."""
    rows = shop()
    for run, at in (("29383920", 0), ("29384280", 360), ("29384640", 720)):
        pod = f"report-{run}-abcde"
        row = conn("shop/report", "shop/db", 5432, n=4, at=at + 1, pod=pod, kind=kind)
        row["src_workload"] = name.format(run=run)
        rows.append(row)
    for k in range(8):
        row = conn("shop/report", peer, port, at=721 + k, pod="report-29384640-abcde", kind=kind)
        row["src_workload"] = name.format(run="29384640")
        rows.append(row)
    return rows


def test_cronjob_runs_named_by_their_job_are_one_workload_for_the_sibling_rule() -> None:
    # Hubble names a CronJob's pods by their Job (report-<scheduled minutes>): aggregation
    # resolves every run to the CronJob, and so does the sibling rule, which used to name
    # workloads from the raw rows and found no siblings across runs.
    by_job = recommend(make_table(_job_runs(OUTSIDE, 4444, kind="Job", name="report-{run}")))
    by_cronjob = recommend(make_table(_job_runs(OUTSIDE, 4444, kind="CronJob", name="report")))
    for rec in (by_job, by_cronjob):
        items = rec.report["anomalies"]["items"]
        assert [(i["rule"], i["source"], i["destination"]) for i in items] == [
            ("sibling-deviation", "shop/report", f"external:{OUTSIDE}")
        ]
        assert "runs of the same CronJob" in items[0]["reason"]
    assert by_job.report["anomalies"] == by_cronjob.report["anomalies"]


def test_sibling_rule_reading_rows_again_resolves_owners_too() -> None:
    # Without the aggregation's per-pod rows (an EdgeTables built elsewhere), the rule reads
    # the flow rows again: with the same owners, the same finding.
    from dataclasses import replace

    from recommender.aggregate.edges import aggregate_edges
    from recommender.analysis.anomaly import screen_flows

    table = make_table(_job_runs(OUTSIDE, 4444, kind="Job", name="report-{run}"))
    tables = aggregate_edges(table)
    assert tables.pod_peers is not None
    kept = screen_flows(tables, table)
    read_again = screen_flows(replace(tables, pod_peers=None), table)
    batches = screen_flows(replace(tables, pod_peers=None), lambda: iter(table.to_batches(7)))
    assert [a.to_dict() for a in kept.anomalies] == [a.to_dict() for a in read_again.anomalies]
    assert [a.to_dict() for a in kept.anomalies] == [a.to_dict() for a in batches.anomalies]
    assert [a.rule for a in kept.anomalies] == ["sibling-deviation"]
