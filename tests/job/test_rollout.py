"""The staged rollout (issue 20): a week of nightly runs, the cluster's would-deny verdicts read
back from the flows, a reset on wanted traffic that would break, and promotion when clean."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from _jobdata import job_file, moto_s3, noon
from conftest import flow_row, make_table

from recommender.evaluation.staged import staged_evidence, staged_verdict
from recommender.job.runner import run_job

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT.parent / "shared" / "tools" / "validate_manifests.py"
DAY1 = date(2026, 3, 2)
ALLOW = "pending:0|default|shop/staged:default.allow-db|allow|0"
DENY = "pending:0|default|shop/staged:default.allow-db|deny|-1"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def _row(day: date, minute: int, **values: Any) -> dict[str, Any]:
    base = {
        "start_time": noon(day) + timedelta(minutes=minute),
        "end_time": noon(day) + timedelta(minutes=minute + 1),
        "src_namespace": "shop", "src_workload": "web", "src_pod": "web-7d9f-abcde",
        "dst_namespace": "shop", "dst_workload": "db", "dst_pod": "db-0",
        "dst_port": 5432, "protocol": "TCP", "connections": 5,
    }
    return flow_row(**{**base, **values})


def day_bytes(day: date, would_break: bool) -> bytes:
    """One day of the shop: web -> db, which the staged policy evaluates (allow; on a bad day
    also deny: a would-deny on wanted traffic), and a refused probe of db's SSH port that the
    staged policy would deny too (that one must not hold the rollout back)."""
    rows = [
        _row(day, 0, policies=[ALLOW]),
        _row(day, 5, dst_port=22, verdict="denied", policies=[DENY], connections=2),
    ]
    if would_break:
        rows.append(_row(day, 10, policies=[DENY], connections=37))
    sink = io.BytesIO()
    pq.write_table(make_table(rows), sink)
    return sink.getvalue()


def write_day(root: Path, day: date, would_break: bool) -> None:
    path = root / f"date={day:%Y-%m-%d}" / "flows.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(day_bytes(day, would_break))


def files(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.rglob("*.yaml"))}


def test_the_staged_verdict_of_a_flow() -> None:
    assert staged_verdict(["0|t|a/p|allow|0", DENY], "allowed") == (
        "deny", "shop/staged:default.allow-db", -1
    )
    assert staged_verdict([ALLOW], "allowed") == ("allow", "shop/staged:default.allow-db", 0)
    assert staged_verdict(["pending:0|t|a/p|pass|0"], "allowed") is None  # pass decides nothing
    assert staged_verdict(["pending:garbage"], "allowed") is None
    assert staged_verdict(None, "audit") == ("deny", "", -2)  # Cilium policy audit mode
    assert staged_verdict(None, "allowed") is None


def test_would_deny_counts_wanted_traffic_only(tmp_path: Path) -> None:
    from recommender.aggregate.edges import aggregate_edges
    from recommender.config import RecommendConfig

    write_day(tmp_path, DAY1, would_break=True)
    table = pq.read_table(tmp_path / f"date={DAY1:%Y-%m-%d}" / "flows.parquet")
    tables = aggregate_edges(table, RecommendConfig())
    evidence = staged_evidence(table, tables.edges)
    assert evidence.flows == 3
    rule = evidence.rules[("shop/staged:default.allow-db", -1)]
    assert (rule.would_deny, rule.examples) == (
        39, ["shop/web -> shop/db TCP/22", "shop/web -> shop/db TCP/5432"]
    )
    assert evidence.rules[("shop/staged:default.allow-db", 0)].would_allow == 5
    (breaking,) = evidence.would_deny  # the refused SSH probe is not wanted traffic
    assert breaking.line() == (
        "would break: shop/web -> shop/db TCP/5432, 37 connections since 2026-03-02 12:10:00 "
        "(by shop/staged:default.allow-db)"
    )
    assert evidence.namespaces_to_reset() == {"shop"}
    # Without the evidence edges nothing is known to be wanted.
    assert staged_evidence(table, None).would_deny == []


@pytest.fixture(scope="module")
def s3():
    yield from moto_s3()


@needs_git
@pytest.mark.parametrize("storage", ["folder", "s3"])
def test_a_week_staged_reset_by_a_would_deny_promoted_when_clean(
    tmp_path: Path, storage: str, request: pytest.FixtureRequest
) -> None:
    flows, out, remote = tmp_path / "flows", tmp_path / "out", tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote))
    input_uri, output_uri, extra = str(flows), str(out), {}
    if storage == "s3":
        s3 = request.getfixturevalue("s3")
        bucket = f"rollout-{tmp_path.name[-20:].lower().replace('_', '-')}"
        s3.client.create_bucket(Bucket=bucket)
        for i in range(7):
            day = DAY1 + timedelta(days=i)
            s3.client.put_object(Bucket=bucket, Key=f"flows/date={day:%Y-%m-%d}/f.parquet",
                                 Body=day_bytes(day, would_break=i == 1))
        input_uri, output_uri = f"s3://{bucket}/flows", f"s3://{bucket}/out"
        extra = {"storage": {"endpoint_url": s3.url}}
    else:
        for i in range(7):
            write_day(flows, DAY1 + timedelta(days=i), would_break=i == 1)

    def tree() -> dict[str, str]:
        if storage == "folder":
            return files(out)
        pointer = json.loads(s3.client.get_object(Bucket=bucket, Key="out/current.json")
                             ["Body"].read())
        prefix = f"out/{pointer['path']}/"
        pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        names = sorted(o["Key"] for p in pages for o in p.get("Contents", []))
        return {
            k[len(prefix):]: s3.client.get_object(Bucket=bucket, Key=k)["Body"].read().decode()
            for k in names if k.endswith(".yaml")
        }

    def text(name: str) -> str:
        if storage == "folder":
            return (out / name).read_text()
        pointer = json.loads(s3.client.get_object(Bucket=bucket, Key="out/current.json")
                             ["Body"].read())
        key = f"out/{pointer['path']}/{name}"
        return str(s3.client.get_object(Bucket=bucket, Key=key)["Body"].read().decode())

    config = job_file(
        tmp_path / "job.yaml",
        {
            **extra,
            "input": {"uri": input_uri, "window_days": 1},
            "output": {"uri": output_uri},
            "lifecycle": {"stable_runs": 2},
            "rollout": {"staged": True, "promote_after_days": 4},
            "gitops": {"url": str(remote), "branch": "recs", "path": "netpol"},
        },
        dialects=["kubernetes", "calico"],
        namespaces=["shop"],
    )
    seen: list[tuple[str, bool, int]] = []
    trees: list[dict[str, str]] = []
    commits: list[bool] = []
    evidence: list[list[tuple[int, int, int]]] = []
    line = (
        "would break: shop/web -> shop/db TCP/5432, 37 connections since 2026-03-03 12:10:00 "
        "(by shop/staged:default.allow-db)"
    )
    for i in range(7):
        result = run_job(config, as_of=noon(DAY1 + timedelta(days=i)))
        (ns,) = result.changes["namespaces"]
        seen.append((ns["status"], ns["enforcing"], ns["would_deny"]))
        trees.append(tree())
        commits.append(result.commit is not None)
        rollout = json.loads(text("changes.json"))["rollout"]
        evidence.append([(r["rule"], r["would_deny"], r["would_allow"]) for r in rollout["rules"]])
        changes_md, report_md = text("changes.md"), text("report.md")
        # The staged policies come first in changes.md, before the namespaces and rules.
        assert changes_md.index("## Staged policies") < changes_md.index("## Namespaces")
        if i == 1:  # the would-deny is the first thing the day's changes and report say
            first = changes_md.split("## Staged policies", 1)[1].strip().splitlines()[0]
            assert first == f"- **{line}**"
            assert rollout["moves"] == [{
                "namespace": "shop", "from": "stabilising", "to": "stabilising",
                "reason": "would deny 37 connections of wanted traffic",
            }]  # fmt: skip
            sections = [x for x in report_md.splitlines() if x.startswith("## ")]
            assert sections[:3] == [
                "## Verdict", "## Staged policies would break wanted traffic", "## Summary"
            ]
            after = report_md.split("## Staged policies would break wanted traffic", 1)[1]
            assert next(x for x in after.splitlines() if x.startswith("- ")) == f"- {line}"
            assert report_md.split("## Verdict", 1)[1].split("\n- ", 1)[1].startswith(
                "not ready: The staged policies would break wanted traffic"
            )
        else:
            assert "would break" not in changes_md and "would break" not in report_md
        # Days 1-5 staged (the cluster evaluates them: would-deny evidence), then enforcing.
        staged_form = "kubernetes/_staged/shop/allow-db.yaml" in trees[-1]
        assert staged_form == (i < 5) != ("kubernetes/shop/allow-db.yaml" in trees[-1])
    # The cluster's staged verdicts, every day: the refused SSH probe (2 connections) would be
    # denied by the end of the tier, and on day 2 the 37 wanted connections too; rule 0 allows.
    assert evidence == [[(-1, 2, 0), (0, 0, 5)]] + [[(-1, 39, 0), (0, 0, 5)]] + [
        [(-1, 2, 0), (0, 0, 5)]
    ] * 5
    assert seen == [
        ("learning", False, 0),
        ("stabilising", False, 37),  # reset: the clean period starts again on day 2
        ("stabilising", False, 0),
        ("stable", False, 0),
        ("stable", False, 0),
        ("stable", True, 0),  # day 6: stable, and 4 days without a would-deny
        ("stable", True, 0),
    ]
    staged, enforcing = trees[4], trees[5]
    # Staged: Kubernetes policies under the unlisted _staged/ folder, Calico as staged kinds.
    assert "kubernetes/_staged/shop/allow-db.yaml" in staged
    assert not any(k.startswith("kubernetes/shop/") for k in staged)
    assert "_staged" not in yaml.safe_load(staged["kubernetes/kustomization.yaml"])["resources"]
    calico_staged = [yaml.safe_load(v) for k, v in staged.items()
                     if k.startswith("calico/shop/") and not k.endswith("kustomization.yaml")]
    assert calico_staged and {d["kind"] for d in calico_staged} == {"StagedNetworkPolicy"}
    # Enforcing: the same Kubernetes policies at their place, the staged folder gone.
    moved = staged["kubernetes/_staged/shop/allow-db.yaml"]
    assert enforcing["kubernetes/shop/allow-db.yaml"] == moved
    assert not any("_staged" in k for k in enforcing)
    calico = {
        yaml.safe_load(v)["metadata"]["name"]: yaml.safe_load(v)
        for k, v in enforcing.items()
        if k.startswith("calico/shop/") and not k.endswith("kustomization.yaml")
    }
    assert {d["kind"] for d in calico.values()} == {"NetworkPolicy"}
    for doc in calico_staged:  # staged and enforcing forms: the same rules
        spec = {k: v for k, v in doc["spec"].items() if k != "stagedAction"}
        assert calico[doc["metadata"]["name"]]["spec"] == spec
    # One commit per change: the first staged tree, then the promotion, and no other day.
    assert commits == [True, False, False, False, False, True, False]
    log = git("--git-dir", str(remote), "log", "--format=%s", "recs").splitlines()
    assert log == ["recommender: enforce shop", "recommender: policies for 1 namespaces (2 rules)"]
    message = git("--git-dir", str(remote), "log", "-1", "--format=%B", "recs")
    assert "  shop: stable -> enforcing (stable, and no would-deny since 2026-03-03)" in message
    assert "  shop: stable, enforcing, 3 policies, 2 rules" in message
    listed = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "recs").split()
    assert "netpol/kubernetes/shop/allow-db.yaml" in listed
    assert not any("_staged" in name for name in listed)
    state = json.loads(text("changes.json"))["rollout"]
    assert state["enforcing"] == ["shop"] and state["staged_namespaces"] == []
    if VALIDATE.exists() and storage == "folder":
        done = subprocess.run(
            ["python", str(VALIDATE), str(out / "calico")], capture_output=True, text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_without_the_would_deny_the_same_week_is_promoted_a_day_earlier(tmp_path: Path) -> None:
    """The control of the week above: the would-deny of day 2 is what restarted the clean
    period (promotion on day 6, not day 5) and the count of unchanged runs."""
    flows = tmp_path / "flows"
    for i in range(7):
        write_day(flows, DAY1 + timedelta(days=i), would_break=False)
    config = job_file(
        tmp_path / "job.yaml",
        {
            "input": {"uri": str(flows), "window_days": 1},
            "output": {"uri": str(tmp_path / "out")},
            "lifecycle": {"stable_runs": 2},
            "rollout": {"staged": True, "promote_after_days": 4},
        },
        dialects=["kubernetes"],
        namespaces=["shop"],
    )
    seen = []
    for i in range(7):
        (ns,) = run_job(config, as_of=noon(DAY1 + timedelta(days=i))).changes["namespaces"]
        seen.append((ns["status"], ns["enforcing"]))
    assert seen == [
        ("learning", False), ("stabilising", False), ("stable", False), ("stable", False),
        ("stable", True), ("stable", True), ("stable", True),
    ]  # fmt: skip


def test_rollout_options_are_checked(tmp_path: Path) -> None:
    from recommender.errors import ConfigError
    from recommender.job.config import parse_job_section

    job = {"input": {"uri": str(tmp_path)}, "output": {"uri": str(tmp_path / "o")}}
    assert parse_job_section(job).rollout.staged is False
    parsed = parse_job_section({**job, "rollout": {"staged": True, "promote_after_days": 2}})
    assert parsed.rollout.staged and parsed.rollout.promote_after == timedelta(days=2)
    with pytest.raises(ConfigError, match="promote_after_days"):
        parse_job_section({**job, "rollout": {"promote_after_days": -1}})
    with pytest.raises(ConfigError, match="rollout"):
        parse_job_section({**job, "rollout": {"stagd": True}})


def test_a_cronjob_run_that_would_break_counts_as_wanted_traffic() -> None:
    """The edges name a CronJob's pods by the CronJob; the staged rows must too, or a
    would-deny on tonight's run (a new Job name) would pass as traffic nobody wants."""
    from recommender.aggregate.edges import aggregate_edges
    from recommender.config import RecommendConfig

    def run(minute: int, job: str, **values: Any) -> dict[str, Any]:
        return _row(DAY1, minute, src_workload=job, src_workload_kind="Job",
                    src_pod=f"{job}-x7k2p", src_labels={"app": "report"}, **values)  # fmt: skip

    learned = make_table([run(0, "report-29383920"), run(1, "report-29383920")])
    tables = aggregate_edges(learned, RecommendConfig())
    assert tables.edges.column("src_id").to_pylist() == ["report"]
    tonight = make_table([run(10, "report-29385360", policies=[DENY], connections=4)])
    (breaking,) = staged_evidence(tonight, tables.edges).would_deny
    assert breaking.line().startswith("would break: shop/report -> shop/db TCP/5432, 4 connections")


def test_the_commit_message_says_what_the_rollout_did() -> None:
    """A promotion and a step back are what their commits are about, first line and body."""
    from recommender.job.runner import _commit_message

    def changes(moves: list[dict[str, str]], added: int = 0) -> dict[str, Any]:
        rule = {"namespace": "shop", "policy": "allow-db", "direction": "ingress",
                "peers": ["app=web"], "ports": ["TCP/5432"]}  # fmt: skip
        return {
            "first_run": False,
            "rules": {"added": [rule] * added, "added_total": added, "removed": [],
                      "removed_total": 0},
            "namespaces": [{"namespace": n, "status": "stable", "policies": 2, "rules": 3}
                           for n in ("pay", "shop")],
            "run": {"id": "r1", "as_of": "2026-03-07T12:00:00+00:00"},
            "input": {"files": 1, "uri": "s3://b/flows"},
            "rollout": {
                "staged": True, "moves": moves, "enforcing": ["pay"],
                "staged_namespaces": ["shop"],
                "would_break": [{"line": "would break: shop/web -> shop/db TCP/5432, 3 "
                                         "connections since 2026-03-07 10:00:00"}],
            },
        }  # fmt: skip

    back = {"namespace": "shop", "from": "enforcing", "to": "stabilising",
            "reason": "would deny 3 connections of wanted traffic"}  # fmt: skip
    up = {"namespace": "pay", "from": "stable", "to": "enforcing",
          "reason": "stable, and no would-deny since 2026-03-03"}  # fmt: skip
    message = _commit_message(changes([up, back], added=1))
    lines = message.splitlines()
    assert lines[0] == "recommender: enforce pay; stage shop again; 1 rules added, 0 removed"
    assert lines[4].startswith("would break: shop/web -> shop/db TCP/5432")
    assert "  shop: enforcing -> stabilising (would deny 3 connections of wanted traffic)" in lines
    assert "  pay: stable, enforcing, 2 policies, 3 rules" in lines
    assert "  shop: stable, staged, 2 policies, 3 rules" in lines
    # A reset that keeps a namespace staged changes no file: no rollout line in a head.
    still = {"namespace": "shop", "from": "stabilising", "to": "stabilising", "reason": "x"}
    assert _commit_message(changes([still], added=1)).startswith(
        "recommender: 1 rules added, 0 removed in shop\n"
    )
