"""A failing self-check is loud: one stderr line per problem kind, exit status 3, the files
still written, and the report's first lines say the same; what was left out on purpose is
replayed as its own kind."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from conftest import T0, flow_row, make_table, minutes

from recommender import recommend
from recommender.cli import main


def _web_db(verdict: str, at: float, port: int = 5432, outcome: str = "established") -> dict:
    return flow_row(src_namespace="shop", src_workload="web", src_pod="web-0", src_ip="10.0.0.1",
                    dst_namespace="shop", dst_workload="db", dst_port=port, verdict=verdict,
                    outcome=outcome, start_time=T0 + minutes(at), end_time=T0 + minutes(at),
                    connections=5)  # fmt: skip


def _flows(tmp_path: Path, rows: list[dict]) -> str:
    path = tmp_path / "flows.parquet"
    pq.write_table(make_table(rows), path)
    return str(path)


def test_denied_flows_the_policies_allow_fail_the_run(tmp_path: Path, capsys) -> None:
    # web -> db:5432 allowed in the morning, denied in the afternoon (a policy came and went):
    # the recommendation allows what the input shows denied.
    flows = _flows(tmp_path, [_web_db("allowed", 0), _web_db("denied", 300)])
    out = tmp_path / "out"
    status = main(["run", flows, "-o", str(out)])
    _, err = capsys.readouterr()
    assert status == 3
    lines = [line for line in err.splitlines() if line.startswith("self-check failed:")]
    assert lines == [
        "self-check failed: 1 edge(s) denied in the input would be allowed by these policies"
    ]
    assert (out / "report.md").is_file() and (out / "shop").is_dir()  # still written
    md = (out / "report.md").read_text().splitlines()
    assert md[2].startswith("**Self-check failed: 1 edge(s) denied in the input")
    html = (out / "report.html").read_text()
    assert html.index("self-check failed") < html.index('id="summary"')
    # --json and --dry-run say it too.
    assert main(["run", flows, "-o", str(tmp_path / "j"), "--json"]) == 3
    assert main(["run", flows, "--dry-run"]) == 3


def test_a_clean_run_exits_0(tmp_path: Path, capsys) -> None:
    flows = _flows(tmp_path, [_web_db("allowed", 0)])
    assert main(["run", flows, "-o", str(tmp_path / "out")]) == 0
    assert "self-check failed" not in capsys.readouterr().err


def test_what_is_left_out_on_purpose_is_replayed_as_its_own_kind() -> None:
    rec = recommend(make_table([_web_db("allowed", 0), _web_db("allowed", 5, 6379, "failed")]))
    check = rec.report["self_check"]
    assert check["passed"] and check["coverage"] == 1.0
    purposeful = check["excluded_on_purpose"]
    assert purposeful["by_reason"] == {
        "never-established": {"edges": 1, "connections": 5, "denied_edges": 1,
                              "denied_connections": 5},
    }  # fmt: skip
    # With min_connections the decision shows up the same way.
    rec = recommend(make_table([_web_db("allowed", 0)]), min_connections=10)
    assert rec.report["self_check"]["excluded_on_purpose"]["by_reason"][
        "below-min-connections"]["denied_edges"] == 1  # fmt: skip


def test_failed_flows_allowed_is_a_problem() -> None:
    # The policies learned with --allow-unestablished allow web -> db:6379, which never
    # established: checked against the default run's evidence, that is a refused flow allowed.
    from recommender.pipeline import _self_check

    rows = [_web_db("allowed", 0), _web_db("allowed", 2, 6379, "failed")]
    strict = recommend(make_table(rows))
    lenient = recommend(make_table(rows), allow_unestablished=True)
    assert strict.report["self_check"]["problems"] == []
    assert lenient.report["self_check"]["problems"] == []
    check = _self_check(lenient.policy_set, strict.tables, tables=strict.tables)
    (problem,) = check["problems"]
    assert problem["kind"] == "failed-flows-allowed" and problem["edges"] == 1
