"""The job and `recommend run` share one "edges -> policies + report" step
(:func:`recommender.pipeline.recommend_edges`): on the same flows and options, the job's first
night writes the very tree `run` writes (every dialect, the guardrails, host policies, the
decisions applied), in its output folder, on object storage and in the GitOps repository.

The documented differences (docs/deployment.md): the job adds ``decisions.yaml`` (the copy of
the decisions that shaped the policies), its own files (``changes.*``, ``state/``), and under a
staged rollout the ``_staged/`` folder and Calico's staged kinds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml
from _jobdata import job_file, moto_s3, noon

from recommender.job.runner import run_job

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"
GUARDRAILS = ROOT / "docs" / "examples" / "guardrails.yaml"
DAY = date(2026, 1, 5)  # the sample's day (09:00 to 12:00 UTC)
DECISIONS = """\
apiVersion: recommender.io/v1
kind: Decisions
decisions:
- action: reject
  from: shop/cart
  to: shop/catalog
  port: 9000
  protocol: TCP
  reason: the cart reads the catalog through the frontend from now on
"""
OPTIONS = {
    "dialects": ["kubernetes", "calico", "cilium", "istio"],
    "host_policies": True,
}
#: Files the job writes that `run` does not, by design.
JOB_ONLY = {"decisions.yaml", "changes.json", "changes.md"}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def _yaml_files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*.yaml"))
        if not p.relative_to(root).parts[0].startswith((".", "state"))
    }


@pytest.fixture(scope="module")
def run_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`recommend run` on the sample, with guardrails, decisions and host policies."""
    tmp = tmp_path_factory.mktemp("run")
    (tmp / "decisions.yaml").write_text(DECISIONS)
    config = tmp / "recommend.yaml"
    config.write_text(
        yaml.safe_dump(
            {**OPTIONS, "guardrails": str(GUARDRAILS), "decisions": "decisions.yaml"}
        )
    )
    out = tmp / "out"
    done = subprocess.run(
        [sys.executable, "-m", "recommender", "run", str(SAMPLE), "-o", str(out),
         "--config", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 3), done.stderr  # 3: the self-check's verdict, not an error
    return out


def _job_config(tmp_path: Path, input_uri: str, output_uri: str, **job: object) -> Path:
    (tmp_path / "decisions.yaml").write_text(DECISIONS)
    return job_file(
        tmp_path / "job.yaml",
        {"input": {"uri": input_uri, "window_days": 1}, "output": {"uri": output_uri}, **job},
        guardrails=str(GUARDRAILS),
        decisions="decisions.yaml",
        **OPTIONS,
    )


def test_the_run_being_compared_has_every_part(run_output: Path) -> None:
    """What the comparison covers: three dialects, guardrails, a host policy, a decision."""
    files = _yaml_files(run_output)
    assert {name.split("/")[0] for name in files} >= {"kubernetes", "calico", "cilium", "istio"}
    assert any("/_guardrails/" in name for name in files)
    assert any("/_cluster/" in name for name in files), sorted(files)  # host policies
    report = json.loads((run_output / "report.json").read_text())
    assert [d["status"] for d in report["decisions"]["items"]] == ["applied"]
    assert report["guardrails"]["conflicts"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_job_writes_what_run_writes(tmp_path: Path, run_output: Path) -> None:
    flows = tmp_path / "flows" / f"date={DAY:%Y-%m-%d}"
    flows.mkdir(parents=True)
    shutil.copy(SAMPLE, flows / "flows.parquet")
    remote = tmp_path / "remote.git"
    _git("init", "-q", "--bare", str(remote))
    config = _job_config(
        tmp_path, str(tmp_path / "flows"), str(tmp_path / "out"),
        gitops={"url": str(remote), "branch": "recs", "path": "netpol"},
    )  # fmt: skip
    result = run_job(config, as_of=noon(DAY))
    assert result.commit
    expected = _yaml_files(run_output)
    out = tmp_path / "out"
    written = _yaml_files(out)
    assert (out / "decisions.yaml").read_text() == DECISIONS
    assert {k: v for k, v in written.items() if k not in JOB_ONLY} == expected
    # The reports are `run`'s (the same sections, the graph beside them).
    for name in ("graph.svg", "report.html", "report.md", "report.json"):
        assert (out / name).is_file()
    job_report = json.loads((out / "report.json").read_text())
    run_report = json.loads((run_output / "report.json").read_text())
    for section in ("rules", "guardrails", "self_check", "decisions", "anomalies", "segments",
                    "istio"):
        assert job_report[section] == run_report[section], section
    # The GitOps repository: the same tree, with the decisions file beside it.
    checkout = tmp_path / "checkout"
    _git("clone", "-q", "--branch", "recs", str(remote), str(checkout))
    committed = _yaml_files(checkout / "netpol")
    assert committed.pop("decisions.yaml") == (out / "decisions.yaml").read_text()
    assert committed == expected


@pytest.fixture(scope="module")
def s3():
    yield from moto_s3()


def test_the_job_writes_what_run_writes_to_object_storage(
    tmp_path: Path, run_output: Path, s3
) -> None:
    bucket = "job-matches-run"
    s3.client.create_bucket(Bucket=bucket)
    s3.client.put_object(
        Bucket=bucket, Key=f"flows/date={DAY:%Y-%m-%d}/flows.parquet", Body=SAMPLE.read_bytes()
    )
    config = _job_config(
        tmp_path, f"s3://{bucket}/flows", f"s3://{bucket}/out",
    )  # fmt: skip
    job = yaml.safe_load(config.read_text())
    job["job"]["storage"] = {"endpoint_url": s3.url}
    config.write_text(yaml.safe_dump(job))
    run_job(config, as_of=noon(DAY))
    pointer = json.loads(
        s3.client.get_object(Bucket=bucket, Key="out/current.json")["Body"].read()
    )
    prefix = f"out/{pointer['path']}/"
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = sorted(o["Key"] for p in pages for o in p.get("Contents", []))
    written = {
        k[len(prefix):]: s3.client.get_object(Bucket=bucket, Key=k)["Body"].read().decode()
        for k in keys
        if k.endswith(".yaml") and not k[len(prefix):].startswith("state")
    }
    assert "decisions.yaml" in written and f"{prefix}graph.svg" in keys
    assert {k: v for k, v in written.items() if k not in JOB_ONLY} == _yaml_files(run_output)


def test_under_a_staged_rollout_the_guardrails_stay_enforcing(tmp_path: Path) -> None:
    """The guardrails are the organisation's rules, not a proposal: a staged rollout writes
    them where `run` does, listed by the top kustomization, while the policies wait in
    ``_staged/`` (Kubernetes, Cilium) or as staged kinds (Calico)."""
    flows = tmp_path / "flows" / f"date={DAY:%Y-%m-%d}"
    flows.mkdir(parents=True)
    shutil.copy(SAMPLE, flows / "flows.parquet")
    config = _job_config(tmp_path, str(tmp_path / "flows"), str(tmp_path / "out"),
                         rollout={"staged": True})  # fmt: skip
    run_job(config, as_of=noon(DAY))
    out = tmp_path / "out"
    for dialect in ("kubernetes", "calico", "cilium"):
        top = yaml.safe_load((out / dialect / "kustomization.yaml").read_text())["resources"]
        assert "_guardrails" in top, dialect
        kinds = {
            yaml.safe_load(p.read_text())["kind"]
            for p in (out / dialect / "_guardrails").glob("*.yaml")
            if p.name != "kustomization.yaml"
        }
        assert kinds and not any(k.startswith("Staged") for k in kinds), (dialect, kinds)
        assert not (out / dialect / "_staged" / "_guardrails").exists()
    assert (out / "kubernetes" / "_staged" / "shop").is_dir()
    assert not (out / "kubernetes" / "shop").exists()
