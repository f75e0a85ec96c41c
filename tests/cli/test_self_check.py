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


def test_an_edge_denied_after_it_was_allowed_gets_no_rule(tmp_path: Path, capsys) -> None:
    # web -> db:5432 allowed in the morning, denied in the afternoon (someone closed it): the
    # policy in force at the end of the window refuses it, so it is not learned.
    rows = [_web_db("allowed", 0), _web_db("denied", 300), _web_db("allowed", 10, 6379)]
    flows = _flows(tmp_path, rows)
    out = tmp_path / "out"
    assert main(["run", flows, "-o", str(out), "--json"]) == 0
    report = recommend(make_table(rows)).report
    assert report["self_check"]["passed"] and "mixed_verdicts" not in report["self_check"]
    assert [(r["dst_port"], r["reason"]) for r in report["excluded"]] == [(5432, "denied-later")]
    assert {p for r in report["rules"] for p in r["ports"]} == {"TCP/6379"}
    assert any("denied later in the window" in r["text"] for r in report["verdict"]["reasons"])
    # its own reason, not also counted among the edges left out as replies or ephemeral ports
    assert not any("suspected replies" in r["text"] for r in report["verdict"]["reasons"])


def test_an_edge_allowed_again_after_its_denial_is_kept_for_review(tmp_path: Path) -> None:
    # denied in the morning, allowed in the afternoon (the denial was lifted): learned, and the
    # verdict asks for review; the self-check does not fail.
    flows = _flows(tmp_path, [_web_db("denied", 0), _web_db("allowed", 300)])
    assert main(["run", flows, "-o", str(tmp_path / "out")]) == 0
    report = recommend(make_table([_web_db("denied", 0), _web_db("allowed", 300)])).report
    check = report["self_check"]
    assert check["passed"] and check["mixed_verdicts"]["edges"] == 1
    assert {p for r in report["rules"] for p in r["ports"]} == {"TCP/5432"}
    assert report["verdict"]["verdict"] == "review first"
    assert any("both allowed and denied" in r["text"] for r in report["verdict"]["reasons"])


def test_denied_flows_the_policies_allow_fail_the_run(tmp_path: Path, capsys, monkeypatch) -> None:
    # Without the latest-verdict rule and the mixed-verdict allowance, web -> db:5432 allowed
    # in the morning and denied in the afternoon would be learned: the recommendation would
    # allow what the input shows denied, and the self-check must say so loudly.
    monkeypatch.setattr("recommender.aggregate.latest.latest_verdicts", lambda tables: tables)
    monkeypatch.setattr("recommender.pipeline._mixed_verdicts", lambda refused, evidence: [])
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


def test_a_reviewer_may_open_again_what_was_denied_later(tmp_path: Path) -> None:
    # The verdict asks whether a denied-later edge should stay closed; a reviewer who says no
    # writes an allow decision: the rule comes back and the self-check does not fail.
    from recommender.synthesis.decisions import Decision, Decisions

    rows = [_web_db("allowed", 0), _web_db("denied", 300)]
    allow = Decision("allow", from_="shop/web", to="shop/db", port=5432, protocol="TCP")
    report = recommend(make_table(rows), decisions=Decisions((allow,))).report
    check = report["self_check"]
    assert check["passed"] and check["problems"] == [] and check["denied_but_decided"] == 1
    assert {p for r in report["rules"] for p in r["ports"]} == {"TCP/5432"}
    # without the decision, no rule and no failure either
    plain = recommend(make_table(rows)).report
    assert plain["self_check"]["passed"] and plain["rules"] == []
