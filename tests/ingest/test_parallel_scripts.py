"""The library call from a script that no new interpreter can run again (``python -c``,
``python - <<EOF``) or that has no ``__main__`` guard: the Hubble workers start, print no
traceback, and give the policies the one-process read gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recommender import recommend

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "hubble.jsonl.gz"

#: The script: the library call with two workers, its YAML on stdout after a marker line.
SCRIPT = (
    "import recommender\n"
    "print('script body ran')\n"
    f"rec = recommender.recommend({str(SAMPLE)!r}, workers=2)\n"
    "print('--- yaml')\n"
    "print(rec.to_yaml(), end='')\n"
)


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), path) if p))


@pytest.fixture(scope="module")
def expected() -> str:
    return recommend(SAMPLE, workers=1).to_yaml()


def _check(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # The fallback's notice: the workers did start, so the read really was parallel.
    assert "did not start" not in done.stderr
    head, _, yaml_text = done.stdout.partition("--- yaml\n")
    assert head.count("script body ran") == 1
    assert yaml_text == expected


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_script_without_a_file(how: str, tmp_path: Path, expected: str):
    if how == "-c":
        cmd, stdin = [sys.executable, "-c", SCRIPT], None
    else:
        cmd, stdin = [sys.executable, "-"], SCRIPT
    done = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300
    )
    _check(done, expected)


def test_script_without_a_main_guard_runs_once(tmp_path: Path, expected: str):
    """A spawned worker never runs the caller's script again (without a guard it would start
    the whole run again in each worker)."""
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=300,
    )
    _check(done, expected)


def test_the_main_module_is_left_as_it_was():
    from recommender.ingest import parallel

    main = sys.modules["__main__"]
    before = vars(main).get("__file__")
    ctx = parallel.mp.get_context("spawn")
    with parallel._without_main_script(ctx):
        if getattr(main, "__spec__", None) is None:
            assert "__file__" not in vars(main)
    assert vars(main).get("__file__") == before
