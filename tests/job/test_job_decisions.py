"""The scheduled job with a decisions file: applied on the run's day, reported, and kept next
to the policies in the outputs and in the GitOps folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
from _jobdata import CRON_DB, WEB_DB, WEB_DNS, job_file, noon, write_day

from recommender.job.runner import run_job
from recommender.synthesis.decisions import load_decisions

D1 = date(2026, 1, 5)
DECISIONS = """\
apiVersion: recommender.io/v1
kind: Decisions
decisions:
- action: reject
  from: shop/cron
  to: shop/db
  port: 5432
  protocol: TCP
  reason: the cron job moves to the batch cluster
- action: exclude
  namespace: sandbox
  expires: 2026-01-06
"""


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_job_applies_reports_and_commits_its_decisions(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    write_day(flows, D1 - timedelta(days=1), [WEB_DB, CRON_DB])
    write_day(flows, D1, [WEB_DB, WEB_DNS])
    remote = tmp_path / "remote.git"
    _git("init", "-q", "--bare", str(remote))
    (tmp_path / "decisions.yaml").write_text(DECISIONS)
    config = job_file(
        tmp_path / "job.yaml",
        {
            "input": {"uri": str(flows), "window_days": 2},
            "output": {"uri": str(tmp_path / "out")},
            "gitops": {"url": str(remote), "branch": "recs", "path": "clusters/prod"},
        },
        decisions="decisions.yaml",  # next to the job file
    )
    run_job(config, as_of=noon(D1))
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert [(x["action"], x["status"]) for x in report["decisions"]["items"]] == [
        ("reject", "applied"),
        ("exclude", "stale"),  # no sandbox in the flows; expires the day after the run
    ]
    assert not any("cron" in p for r in report["rules"] for p in r["peers"])
    assert report["verdict"]["verdict"] in ("review first", "not ready")
    assert (
        (out / "report.md").read_text().startswith("# Network policy recommendation\n\n## Verdict")
    )
    assert load_decisions(out / "decisions.yaml") == load_decisions(tmp_path / "decisions.yaml")
    committed = _git("--git-dir", str(remote), "show", "recs:clusters/prod/decisions.yaml")
    assert committed == DECISIONS
    # a day after the expiry the entry is reported as expired
    run_job(config, as_of=noon(D1 + timedelta(days=1)))
    report = json.loads((out / "report.json").read_text())
    assert [x["status"] for x in report["decisions"]["items"]] == ["applied", "expired"]


def test_recommend_job_takes_decisions_on_the_command_line(tmp_path: Path) -> None:
    from recommender.cli import main

    flows = tmp_path / "flows"
    write_day(flows, D1, [WEB_DB, CRON_DB])
    decisions = tmp_path / "review" / "decisions.yaml"
    decisions.parent.mkdir()
    decisions.write_text(DECISIONS)
    config = job_file(
        tmp_path / "job.yaml",
        {"input": {"uri": str(flows), "window_days": 1}, "output": {"uri": str(tmp_path / "out")}},
    )
    args = ["job", "--config", str(config), "--as-of", "2026-01-05T12:00:00Z"]
    assert main([*args, "--decisions", str(decisions)]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["decisions"]["applied"] == 1
    assert (tmp_path / "out" / "decisions.yaml").read_text() == DECISIONS
