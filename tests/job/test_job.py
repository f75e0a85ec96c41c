"""The scheduled job end to end on local folders: state across runs, the lifecycle, GitOps
commits only on change, exit codes, JSON logs, and runs killed part-way (SIGKILL)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from _jobdata import API_WEB, CRON_DB, WEB_DB, WEB_DNS, job_file, noon, write_day

from recommender.cli import main
from recommender.job.runner import run_job
from recommender.policy.writer import MARKER_FILE

ROOT = Path(__file__).resolve().parents[2]
D1 = date(2026, 1, 5)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """Flows of two days, an output folder, a bare remote and a job file using them."""
    flows = tmp_path / "flows"
    write_day(flows, D1 - timedelta(days=1), [WEB_DB, CRON_DB])
    write_day(flows, D1, [WEB_DB, WEB_DNS])
    remote = tmp_path / "remote.git"
    if shutil.which("git"):
        git("init", "-q", "--bare", str(remote))
    job = {
        "input": {"uri": str(flows), "window_days": 2},
        "output": {"uri": str(tmp_path / "out")},
        "lifecycle": {"stable_runs": 2},
        "state": {"retention_days": 30},
        "gitops": {"url": str(remote), "branch": "recs", "path": "clusters/prod"},
    }
    config = job_file(tmp_path / "job.yaml", job)
    return {"flows": flows, "out": tmp_path / "out", "remote": remote, "config": config,
            "root": tmp_path}


def changes(out: Path) -> dict:
    return json.loads((out / "changes.json").read_text())


def commits(remote: Path) -> list[str]:
    return git("--git-dir", str(remote), "log", "--format=%s", "recs").splitlines()


def policy_files(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*.yaml"))
    }


@needs_git
def test_two_runs_on_the_same_input_make_one_commit_and_the_lifecycle(site):
    first = run_job(site["config"], as_of=noon(D1))
    assert first.commit is not None
    tree = policy_files(site["out"])
    assert "shop/allow-web.yaml" in tree and "shop/allow-db.yaml" in tree
    second = run_job(site["config"], as_of=noon(D1))
    assert second.commit is None
    c = changes(site["out"])
    rules = sum(n["rules"] for n in c["namespaces"])
    assert commits(site["remote"]) == [f"recommender: policies for 1 namespaces ({rules} rules)"]
    assert policy_files(site["out"]) == tree
    assert c["first_run"] is False and c["run"]["runs"] == 2
    assert c["rules"]["added"] == [] and c["rules"]["removed"] == []
    assert c["traffic"]["newly_denied_edges"] == 0
    # The committed folder is exactly the policy tree: no reports, no state, no marker.
    listed = git("--git-dir", str(site["remote"]), "ls-tree", "-r", "--name-only", "recs").split()
    assert listed == sorted(f"clusters/prod/{name}" for name in tree)
    for name in tree:
        shown = git("--git-dir", str(site["remote"]), "show", f"recs:clusters/prod/{name}")
        assert shown.encode() == tree[name]
    # The lifecycle (stable_runs: 2): learning, stabilising, stable, and learning on a change.
    assert [n["status"] for n in c["namespaces"]] == ["stabilising"]
    run_job(site["config"], as_of=noon(D1))
    assert [n["status"] for n in changes(site["out"])["namespaces"]] == ["stable"]
    write_day(site["flows"], D1, [API_WEB], name="more")
    assert run_job(site["config"], as_of=noon(D1)).commit is not None
    c = changes(site["out"])
    assert {n["namespace"]: n["status"] for n in c["namespaces"]} == {
        "pay": "learning", "shop": "learning"
    }
    assert {"from": "stable", "namespace": "shop", "to": "learning"} in c["transitions"]
    assert {"from": None, "namespace": "pay", "to": "learning"} in c["transitions"]
    assert len(commits(site["remote"])) == 2


@needs_git
def test_state_keeps_rules_across_the_window_then_marks_them_stale(site):
    run_job(site["config"], as_of=noon(D1))
    assert "shop/allow-cron.yaml" in policy_files(site["out"])
    # Ten days later the window (2 days) holds only web -> db: cron's rule stays, from the state.
    later = D1 + timedelta(days=10)
    write_day(site["flows"], later, [WEB_DB, API_WEB])
    result = run_job(site["config"], as_of=noon(later))
    assert "shop/allow-cron.yaml" in policy_files(site["out"])
    c = changes(site["out"])
    assert c["input"]["files"] == 1
    assert c["edges"]["new"] == 1 and c["edges"]["stale"] == 0  # api -> web
    assert {r["policy"] for r in c["rules"]["added"]} >= {"allow-api", "allow-web"}
    assert c["rules"]["removed"] == []
    assert result.commit is not None
    added = c["rules"]["added_total"]
    assert commits(site["remote"])[0] == f"recommender: {added} rules added, 0 removed in pay, shop"
    # Past the retention period: cron's edge is stale, its rules are removed and reported.
    late = D1 + timedelta(days=35)
    write_day(site["flows"], late, [WEB_DB, WEB_DNS, API_WEB])
    run_job(site["config"], as_of=noon(late))
    c = changes(site["out"])
    assert "shop/allow-cron.yaml" not in policy_files(site["out"])
    assert c["edges"]["newly_stale"] == 1
    assert [(e["src_id"], e["dst_id"]) for e in c["edges"]["stale_edges"]] == [("cron", "db")]
    removed = {(r["policy"], r["direction"], tuple(r["peers"])) for r in c["rules"]["removed"]}
    assert ("allow-cron", "egress", ("app=db",)) in removed
    assert "shop/allow-cron" in c["policies"]["removed"]
    assert "stale: shop/cron -> shop/db TCP/5432" in (site["out"] / "changes.md").read_text()


def test_json_logs_and_no_flows_in_the_window_exits_3_keeping_the_outputs(site, capsys):
    cfg = yaml.safe_load(site["config"].read_text())
    del cfg["job"]["gitops"]
    job_file(site["config"], cfg["job"])
    assert main(["job", "--config", str(site["config"]), "--as-of", "2026-01-05T12:00:00Z",
                 "--log-format", "json"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    events = [e["event"] for e in entries]
    assert events[0] == "job.start" and events[-1] == "job.finish"
    assert {"job.listed", "job.read", "job.synthesised", "job.written"} <= set(events)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    c = changes(site["out"])
    policies = [n for n in policy_files(site["out"])
                if n.count("/") == 1 and not n.endswith("kustomization.yaml")]
    assert entries[-1]["policies"] == len(policies)
    assert entries[-1]["rules_added"] == c["rules"]["added_total"] > 0
    before = policy_files(site["out"])
    code = main(["--config", str(site["config"]), "--as-of", "2026-03-01T00:00:00Z",
                 "--log-format", "json"])
    assert code == 3
    assert policy_files(site["out"]) == before
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    failed = [entry for entry in lines if entry.get("event") == "job.failed"]
    assert failed and failed[0]["exit_code"] == 3 and failed[0]["level"] == "error"
    assert "date=2026-03-01" in failed[0]["message"]
    # Files that hold no flow at all (a broken export) are no better than no files.
    write_day(site["flows"], date(2026, 3, 1), [])
    assert main(["job", "-c", str(site["config"]), "--as-of", "2026-03-01T12:00:00Z"]) == 3
    assert "hold no flow record" in capsys.readouterr().err
    assert policy_files(site["out"]) == before


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"input": {"uri": "x"}}, "output.uri is required"),
        ({"input": {"uri": "x", "window_days": 0}, "output": {"uri": "o"}}, "window_days"),
        ({"input": {"uri": "x", "partition": "daily"}, "output": {"uri": "o"}}, "strftime"),
        ({"input": {"uri": "ftp://x"}, "output": {"uri": "o"}}, "unsupported storage scheme"),
        ({"input": {"uri": "x"}, "output": {"uri": "o"}, "extra": 1}, "unknown section"),
        ({"input": {"uri": "x", "bucket": 1}, "output": {"uri": "o"}}, "unknown key"),
        ({"input": {"uri": "x"}, "output": {"uri": "o"}, "gitops": {"url": "r", "path": ".."}},
         "gitops.path"),
    ],
)
def test_invalid_job_files_exit_2_with_the_reason(tmp_path, capsys, job, message):
    config = job_file(tmp_path / "job.yaml", job)
    assert main(["job", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_a_failed_push_exits_5_after_writing_the_outputs(site, capsys):
    cfg = yaml.safe_load(site["config"].read_text())
    cfg["job"]["gitops"]["url"] = str(site["root"] / "no-such-repo.git")
    job_file(site["config"], cfg["job"])
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert main(["job", "-c", str(site["config"]), "--as-of", "2026-01-05T12:00:00Z"]) == 5
    assert (site["out"] / "shop" / "allow-web.yaml").is_file()
    assert "git could not" in capsys.readouterr().err


# --------------------------------------------------------------------------- killed runs

_KILLER = """
import os, signal, sys
from pathlib import Path
import recommender.policy.writer as writer

def die(tmp, out):
    if sys.argv[1] == "mid-swap":  # the first of the writer's two renames, then death
        os.rename(out, out.parent / f".{out.name}.old-killed")
    os.kill(os.getpid(), signal.SIGKILL)

writer._swap = die
from recommender.cli import main
sys.exit(main(["job", "--config", sys.argv[2], "--as-of", sys.argv[3]]))
"""


def _killed_run(mode: str, config: Path, as_of: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _KILLER, mode, str(config), as_of],
                          env=env, capture_output=True, text=True, timeout=120)
    return done.returncode


def test_runs_killed_while_writing_leave_the_previous_outputs(site):
    cfg = yaml.safe_load(site["config"].read_text())
    del cfg["job"]["gitops"]
    job_file(site["config"], cfg["job"])
    run_job(site["config"], as_of=noon(D1))

    def files() -> dict[str, bytes]:
        return {p.relative_to(site["out"]).as_posix(): p.read_bytes()
                for p in site["out"].rglob("*") if p.is_file()}

    before = files()
    later = D1 + timedelta(days=1)
    write_day(site["flows"], later, [API_WEB])
    as_of = f"{later}T12:00:00+00:00"
    # Killed with the new tree complete but not swapped in: the output is the previous run's.
    assert _killed_run("before-swap", site["config"], as_of) == -signal.SIGKILL
    assert files() == before
    assert any(p.name.startswith(".out.tmp-") for p in site["root"].iterdir())
    # Killed between the writer's two renames: the previous tree is whole under .out.old-*.
    assert _killed_run("mid-swap", site["config"], as_of) == -signal.SIGKILL
    assert not site["out"].exists()
    backup = site["root"] / ".out.old-killed"
    assert (backup / MARKER_FILE).is_file() and (backup / "shop" / "allow-web.yaml").is_file()
    # The next run puts it back and starts from its state (run 2, not a first run), and leaves
    # no temporary trees behind.
    run_job(site["config"], as_of=noon(later))
    c = changes(site["out"])
    assert c["first_run"] is False and c["run"]["runs"] == 2
    assert any(r["policy"] == "allow-api" for r in c["rules"]["added"])
    assert [p.name for p in site["root"].iterdir() if p.name.startswith(".out")] == []


def test_a_foreign_output_folder_is_refused_before_any_work(site, capsys):
    site["out"].mkdir()
    (site["out"] / "mine.txt").write_text("keep me\n")
    assert main(["job", "--config", str(site["config"]), "--as-of", "2026-01-05T12:00:00Z"]) == 2
    assert "not written by recommender" in capsys.readouterr().err
    assert (site["out"] / "mine.txt").read_text() == "keep me\n"
    # The command's log handler is gone again: library logs propagate as before.
    import logging

    logger = logging.getLogger("recommender")
    assert logger.propagate is True and not logger.handlers


@needs_git
def test_promote_stable_commits_only_settled_namespaces(site):
    cfg = yaml.safe_load(site["config"].read_text())
    cfg["job"]["gitops"]["promote"] = "stable"
    cfg["job"]["lifecycle"]["stable_runs"] = 1
    job_file(site["config"], cfg["job"])

    def repo() -> list[str]:
        out = git("--git-dir", str(site["remote"]), "ls-tree", "-r", "--name-only", "recs")
        return [name.removeprefix("clusters/prod/") for name in out.split()]

    def show(name: str) -> str:
        return git("--git-dir", str(site["remote"]), "show", f"recs:clusters/prod/{name}")

    run_job(site["config"], as_of=noon(D1))  # shop: learning, held back
    assert repo() == ["kustomization.yaml"]
    assert commits(site["remote"]) == ["recommender: no stable namespace yet"]
    run_job(site["config"], as_of=noon(D1))  # shop: stable, committed
    assert "shop/allow-web.yaml" in repo()
    web = show("shop/allow-web.yaml")
    assert "resources:\n- shop\n" in show("kustomization.yaml")
    # New traffic: shop learns again and pay is new; the repository keeps shop's stable policies.
    write_day(site["flows"], D1, [API_WEB], name="more")
    result = run_job(site["config"], as_of=noon(D1))
    assert result.commit is None and result.changes["gitops"]["held_back"] == ["pay", "shop"]
    assert show("shop/allow-web.yaml") == web and not any(n.startswith("pay/") for n in repo())
    # Unchanged for a run: both stable, both committed.
    run_job(site["config"], as_of=noon(D1))
    assert "pay/allow-api.yaml" in repo() and show("shop/allow-web.yaml") != web
    assert "resources:\n- pay\n- shop\n" in show("kustomization.yaml")
    assert commits(site["remote"])[0] == "recommender: policies of 2 stable namespaces (pay, shop)"
    assert len(commits(site["remote"])) == 3


def test_the_job_screens_its_window_too(tmp_path: Path) -> None:
    """A scan in the window gets no rule and is never remembered in the state; the report says
    so (issue 21)."""
    from _jobdata import noon
    from conftest import flow_row, make_table

    flows = tmp_path / "flows"
    write_day(flows, D1, [WEB_DB, WEB_DNS])
    rows = [
        flow_row(start_time=noon(D1) + timedelta(seconds=k),
                 end_time=noon(D1) + timedelta(seconds=k), src_namespace="shop",
                 src_workload="debug", src_pod="debug", src_ip="10.0.0.9",
                 dst_namespace="shop", dst_workload="db", dst_port=port,
                 outcome="established" if port == 5432 else "failed")
        for k, port in enumerate((21, 22, 23, 25, 80, 443, 3306, 5432, 6379, 8080, 9200, 27017))
    ]  # fmt: skip
    import pyarrow.parquet as pq

    pq.write_table(make_table(rows), flows / f"date={D1:%Y-%m-%d}" / "scan.parquet")
    job = {"input": {"uri": str(flows), "window_days": 1},
           "output": {"uri": str(tmp_path / "out")}}  # fmt: skip
    config = job_file(tmp_path / "job.yaml", job)
    run_job(config_path=config, as_of=noon(D1) + timedelta(hours=1))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (scan,) = report["anomalies"]["scans"]
    assert scan["source"] == "shop/debug" and scan["refused"] == 11
    files = [p.name for p in (tmp_path / "out").rglob("*.yaml")]
    assert "allow-web.yaml" in files and "allow-debug.yaml" not in files


def test_the_option_last_keeps_the_latest_part_of_the_window(tmp_path: Path) -> None:
    """``last: 6h`` in the job file means what ``run --last 6h`` means: the latest six hours of
    the flows read (the day before is in the window_days window, not in the last six hours)."""
    flows = tmp_path / "flows"
    write_day(flows, D1 - timedelta(days=1), [WEB_DB, CRON_DB])
    write_day(flows, D1, [WEB_DB, WEB_DNS])
    allowed = {}
    for name, options in (("all", {}), ("last", {"last": "6h"})):
        job = {"input": {"uri": str(flows), "window_days": 2},
               "output": {"uri": str(tmp_path / name)}}
        config = job_file(tmp_path / f"{name}.yaml", job, **options)
        run_job(config, as_of=noon(D1))
        allowed[name] = "\n".join(p.read_text() for p in sorted((tmp_path / name).rglob("*.yaml")))
    assert "cron" in allowed["all"]
    assert "cron" not in allowed["last"] and "web" in allowed["last"]
