"""``recommend review``'s mistakes exit 2 with what to do next, before any server starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from recommender import recommend
from recommender.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("review-cli") / "out"
    recommend(SAMPLE).write(out)
    return out


def test_a_folder_without_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", str(tmp_path)]) == 2
    assert "holds no report.json" in capsys.readouterr().err


def test_decisions_inside_the_folder_a_rerun_replaces(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["review", str(run_dir), "--decisions", str(run_dir / "d.yaml")]) == 2
    assert "keep the decisions file outside it" in capsys.readouterr().err


def test_an_invalid_decisions_file(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "d.yaml"
    bad.write_text("apiVersion: recommender.io/v1\nkind: Decisions\ndecisions:\n- action: nope\n")
    assert main(["review", str(run_dir), "--decisions", str(bad)]) == 2
    assert "decisions[0].action" in capsys.readouterr().err


def test_a_port_in_use(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["review", str(run_dir), "--decisions", str(tmp_path / "d.yaml"),
                     "--port", str(port)])  # fmt: skip
    assert code == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
