"""The ``recommend`` command: exit statuses, output trees, options and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from recommender import __version__
from recommender.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"
FLOWS = str(SAMPLES / "flows.parquet")
HUBBLE = str(SAMPLES / "hubble.jsonl.gz")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``recommend ARGS``: the exit status, stdout and stderr."""
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def assert_usage_error(status: int, out: str, err: str, *needles: str) -> None:
    """Exit 2 with a short ``error:`` message (the first line says it all), no traceback."""
    assert status == 2, (out, err)
    assert err.startswith("error: "), err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) <= 2, err
    for needle in needles:
        assert needle in err.splitlines()[0], err


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """``recommend sample_flows/flows.parquet -o DIR``, once for the module."""
    out = tmp_path_factory.mktemp("run") / "policies"
    status = main([FLOWS, "-o", str(out)])
    return out, status


# --- ingest -------------------------------------------------------------------------------


def test_ingest_writes_parquet_and_prints_the_ledger(tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.parquet"
    status, stdout, err = run(capsys, "ingest", HUBBLE, "-o", str(out))
    assert status == 0, err
    assert pq.read_metadata(out).num_rows == 4314
    assert f"wrote 4,314 connection rows to {out}" in stdout
    assert "records read: 15,310  used: 4,314" in stdout
    assert "replies dropped: 4,479" in stdout
    assert "time span" not in stdout  # the profile only with --summary


def test_ingest_summary_prints_a_profile(tmp_path: Path, capsys) -> None:
    status, stdout, _ = run(capsys, "ingest", FLOWS, "-o", str(tmp_path / "x.parquet"),
                            "--summary")
    assert status == 0
    assert "time span: 2026-01-05 09:00" in stdout
    assert "namespaces (4): kube-system, monitoring, payments, shop" in stdout
    assert "top talkers:" in stdout
    talkers = stdout.split("top talkers:\n", 1)[1].splitlines()
    assert talkers and "external:world -> shop/frontend" in talkers[0]


def test_ingest_json_is_valid_json_with_ledger_and_profile(tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.parquet"
    status, stdout, _ = run(capsys, "ingest", HUBBLE, "-o", str(out), "--json", "--summary")
    assert status == 0
    payload = json.loads(stdout)  # nothing but the JSON document on stdout
    assert payload["output"] == str(out)
    assert payload["rows"] == 4314
    assert payload["ledger"]["read"] == 15310 and payload["ledger"]["balanced"]
    assert payload["profile"]["namespaces"] == ["kube-system", "monitoring", "payments", "shop"]
    assert payload["profile"]["top_talkers"][0]["source"] == "external:world"

    status, stdout, _ = run(capsys, "ingest", HUBBLE, "-o", str(out), "--json")
    assert status == 0
    assert json.loads(stdout)["ledger"]["used"] == 4314


def test_ingest_into_a_folder_is_a_usage_error(tmp_path: Path, capsys) -> None:
    status, out, err = run(capsys, "ingest", FLOWS, "-o", str(tmp_path))
    assert_usage_error(status, out, err, str(tmp_path), "folder")


def test_ingest_without_output_is_a_usage_error(capsys) -> None:
    status, out, err = run(capsys, "ingest", FLOWS)
    assert_usage_error(status, out, err, "--output")


# --- run (the default command) --------------------------------------------------------------


def test_default_command_writes_the_policy_tree(sample_run, capsys) -> None:
    out, status = sample_run
    assert status == 0
    assert (out / "kustomization.yaml").is_file()
    assert (out / "report.json").is_file() and (out / "report.md").is_file()
    namespaces = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert namespaces == ["monitoring", "payments", "shop"]  # kube-system is left out
    top = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert top["kind"] == "Kustomization"
    assert top["resources"] == namespaces
    for ns in namespaces:
        kustomization = yaml.safe_load((out / ns / "kustomization.yaml").read_text())
        listed = sorted(kustomization["resources"])
        on_disk = sorted(
            p.name for p in (out / ns).glob("*.yaml") if p.name != "kustomization.yaml"
        )
        assert listed == on_disk
        for name in on_disk:
            manifest = yaml.safe_load((out / ns / name).read_text())
            assert manifest["kind"] == "NetworkPolicy"
            assert manifest["metadata"]["namespace"] == ns


def test_report_json_parses_and_counts_policies(sample_run) -> None:
    out, _ = sample_run
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["policies"] > 0
    assert report["summary"]["policies"] == sum(
        1 for p in out.rglob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert report["ingest"]["read"] == 4000


def test_run_prints_what_it_wrote(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p"
    status, stdout, _ = run(capsys, "run", FLOWS, "-o", str(out))
    assert status == 0
    assert f"to {out}/" in stdout
    assert "records read: 4,000" in stdout


def test_same_input_twice_gives_byte_identical_trees(sample_run, tmp_path: Path) -> None:
    first, _ = sample_run
    second = tmp_path / "again"
    assert main([FLOWS, "-o", str(second)]) == 0
    assert tree(second) == tree(first)


def test_dry_run_prints_yaml_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "never"
    status, stdout, _ = run(capsys, FLOWS, "-o", str(out), "--dry-run")
    assert status == 0
    assert not out.exists()
    docs = [d for d in yaml.safe_load_all(stdout) if d]
    assert docs and {d["kind"] for d in docs} == {"NetworkPolicy"}
    assert {d["metadata"]["namespace"] for d in docs} == {"monitoring", "payments", "shop"}


def test_namespace_option_limits_the_policies(tmp_path: Path, capsys) -> None:
    status, stdout, _ = run(capsys, FLOWS, "-o", str(tmp_path / "p"), "-n", "shop", "--json")
    assert status == 0
    summary = json.loads(stdout)
    assert summary["namespaces_in_scope"] == ["shop"]
    assert sorted(p.name for p in (tmp_path / "p").iterdir() if p.is_dir()) == ["shop"]


def test_since_and_until_limit_the_flows(tmp_path: Path, capsys) -> None:
    status, stdout, _ = run(capsys, FLOWS, "-o", str(tmp_path / "all"), "--json")
    everything = json.loads(stdout)
    status, stdout, _ = run(capsys, FLOWS, "-o", str(tmp_path / "hour"), "--json",
                            "--since", "2026-01-05T10:00:00Z", "--until", "2026-01-05T11:00:00Z")
    assert status == 0
    hour = json.loads(stdout)
    assert 0 < hour["connection_rows"] < everything["connection_rows"]
    assert datetime.fromisoformat(hour["first_seen"]) >= datetime.fromisoformat(
        "2026-01-05T10:00:00+00:00"
    )


def test_since_not_before_until_is_a_usage_error(capsys) -> None:
    status, out, err = run(capsys, FLOWS, "--dry-run", "--since", "2026-01-05T11:00:00Z",
                           "--until", "2026-01-05T10:00:00Z")
    assert_usage_error(status, out, err, "since")


def test_bad_time_is_a_usage_error(capsys) -> None:
    status, out, err = run(capsys, FLOWS, "--dry-run", "--since", "yesterday")
    assert_usage_error(status, out, err, "yesterday", "ISO 8601")


def test_config_file_sets_options(tmp_path: Path, capsys) -> None:
    config = tmp_path / "recommend.yaml"
    config.write_text("namespaces: [payments]\nmin_connections: 2\n")
    status, stdout, _ = run(capsys, FLOWS, "-o", str(tmp_path / "p"), "--config", str(config),
                            "--json")
    assert status == 0
    assert json.loads(stdout)["namespaces_in_scope"] == ["payments"]
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["summary"]["namespaces_in_scope"] == ["payments"]

    # The command line wins over the file.
    status, stdout, _ = run(capsys, FLOWS, "-o", str(tmp_path / "q"), "-c", str(config),
                            "-n", "shop", "--json")
    assert json.loads(stdout)["namespaces_in_scope"] == ["shop"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("min_connections: -1\n", "min_connections"),
        ("min_conections: 2\n", "min_conections"),
        ("namespaces: [shop\n", "not valid YAML"),
        ("- shop\n", "mapping"),
    ],
)
def test_bad_config_file_is_a_one_line_error(tmp_path: Path, capsys, text: str, named: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    status, out, err = run(capsys, FLOWS, "--dry-run", "--config", str(config))
    assert_usage_error(status, out, err, named, str(config))
    assert len(err.strip().splitlines()) == 1


def test_missing_flow_file_is_a_usage_error_naming_it(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "flows.parquet")
    status, out, err = run(capsys, missing)
    assert_usage_error(status, out, err, missing, "no such file")
    status, out, err = run(capsys, "ingest", missing, "-o", str(tmp_path / "x.parquet"))
    assert_usage_error(status, out, err, missing)
    assert not (tmp_path / "x.parquet").exists()


def test_missing_config_file_is_a_usage_error_naming_it(tmp_path: Path, capsys) -> None:
    status, out, err = run(capsys, FLOWS, "--dry-run", "-c", str(tmp_path / "nope.yaml"))
    assert_usage_error(status, out, err, "nope.yaml")


def test_unknown_option_is_a_usage_error(capsys) -> None:
    status, out, err = run(capsys, FLOWS, "--min-conections", "2")
    assert_usage_error(status, out, err, "--min-conections")


def test_unknown_format_is_a_usage_error(capsys) -> None:
    status, out, err = run(capsys, FLOWS, "--dry-run", "--format", "cilium")
    assert_usage_error(status, out, err, "cilium", "hubble")


def test_negative_number_option_is_a_usage_error(capsys) -> None:
    status, out, err = run(capsys, FLOWS, "--dry-run", "--min-connections", "-2")
    assert_usage_error(status, out, err, "min_connections")


def test_version(capsys) -> None:
    status, out, _ = run(capsys, "--version")
    assert status == 0
    assert out.strip() == f"recommend {__version__}"


def test_help_lists_the_commands(capsys) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    commands = out.split("Commands:", 1)[1]
    assert "ingest" in commands and "run" in commands
    status, out, _ = run(capsys, "run", "--help")
    assert status == 0
    for option in ("--output", "--namespace", "--since", "--until", "--config", "--dry-run"):
        assert option in out



def test_no_arguments_prints_help_not_an_internal_error(capsys) -> None:
    status, out, err = run(capsys)
    assert "internal error" not in err
    assert "Usage:" in out + err
    assert status in (0, 2)


def test_options_may_come_before_the_flows_of_the_default_command(capsys) -> None:
    status, out, err = run(capsys, "--dry-run", FLOWS)
    assert status == 0, err
    assert "kind: NetworkPolicy" in out


# --- the console entry ----------------------------------------------------------------------


def _python_m(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RECOMMENDER_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "recommender", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
    )


def test_python_m_recommender_runs_and_exits_with_the_status(tmp_path: Path) -> None:
    done = _python_m(FLOWS, "-o", "out", "-n", "shop", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "to out/" in done.stdout
    assert (tmp_path / "out" / "shop" / "kustomization.yaml").is_file()

    failed = _python_m("missing.parquet", cwd=tmp_path)
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: missing.parquet")
    assert "Traceback" not in failed.stderr


def test_the_run_process_keeps_pandas_out(tmp_path: Path):
    """`recommend run` in its own process never imports pandas (pyarrow would, 0.4 s, only to
    check its arguments) and writes the same files; called from a program that goes on
    (own_process False, the default), it leaves pandas importable."""
    code = (
        "import sys\n"
        "from recommender import cli\n"
        "own = sys.argv[2] == 'own'\n"
        "rc = cli.main([sys.argv[1], '-o', sys.argv[3]], own_process=own)\n"
        "loaded = 'pandas' in sys.modules\n"
        "try:\n"
        "    import pandas\n"
        "    importable = True\n"
        "except ImportError:\n"
        "    importable = False\n"
        "print('RESULT', rc, loaded, importable)\n"
    )
    sample = str(SAMPLES / "hubble.jsonl.gz")
    own = subprocess.run(
        [sys.executable, "-c", code, sample, "own", str(tmp_path / "own")],
        capture_output=True, text=True, check=True,
    )
    result = [line for line in own.stdout.splitlines() if line.startswith("RESULT")]
    assert result == ["RESULT 0 False False"]
    lib = subprocess.run(
        [sys.executable, "-c", code, sample, "library", str(tmp_path / "lib")],
        capture_output=True, text=True, check=True,
    )
    result = [line for line in lib.stdout.splitlines() if line.startswith("RESULT")]
    assert len(result) == 1 and result[0].split()[1::2] == ["0", "True"]
    for name in ("report.json", "report.md"):
        own_text = (tmp_path / "own" / name).read_text().replace(str(tmp_path / "own"), "OUT")
        lib_text = (tmp_path / "lib" / name).read_text().replace(str(tmp_path / "lib"), "OUT")
        assert own_text == lib_text


def test_a_command_runs_on_an_app_with_only_that_command(capsys) -> None:
    """Only the command asked for is built (Typer evaluates every command's signature):
    the names, the help and the usage errors are those of the full application."""
    import typer.main

    from recommender.cli._app import app
    from recommender.cli._main import _app_for, _commands

    assert _commands() == set(typer.main.get_group(app).commands)
    for name in sorted(_commands()):
        slim = typer.main.get_group(_app_for(name))
        assert list(slim.commands) == [name]
        full = typer.main.get_group(app).commands[name]
        assert [p.opts for p in slim.commands[name].params] == [p.opts for p in full.params]
        for args in ([name, "--help"], [name, "--no-such-option"]):
            outputs = []
            for target in (app, _app_for(name)):
                with pytest.raises(SystemExit):
                    target(args=args, prog_name="recommend")
                outputs.append(capsys.readouterr())
            assert outputs[0] == outputs[1]
    assert _app_for("no-such-command") is app
