"""The forked child computations (recommender._forked): the answer is the function's, from a
child where one can run, and exactly the function's own error where the child fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recommender import _forked
from recommender._forked import Forked, forked

pytestmark = pytest.mark.skipif(not _forked.can_fork(), reason="forks only on Linux")


def _pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value * 2


def test_the_answer_comes_from_a_child_process() -> None:
    job = forked(_pid_and, 21)
    assert job.in_child
    pid, value = job.result()
    assert value == 42
    assert pid != os.getpid()
    assert job.child_seconds is not None and job.child_seconds >= 0
    assert job.result() == (pid, 42)  # asked again: the same answer, no second child


def test_without_fork_the_function_runs_here_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_forked.NO_FORK_ENV, "1")
    job = forked(_pid_and, 1)
    assert not job.in_child
    assert job.result() == (os.getpid(), 2)
    assert job.child_seconds is None


class Broken(ValueError):
    pass


def _fails_in_child(parent: int) -> int:
    if os.getpid() != parent:
        raise Broken("child only")
    return 7


def _raises() -> None:
    raise Broken("always")


def test_a_child_that_fails_is_done_again_here() -> None:
    """The parent computes the answer itself: here it succeeds where the child did not."""
    job = forked(_fails_in_child, os.getpid())
    assert job.result() == 7
    assert job.child_seconds is None


def test_an_error_surfaces_as_the_functions_own() -> None:
    job = forked(_raises)
    with pytest.raises(Broken, match="always") as info:
        job.result()
    assert any(entry.name == "_raises" for entry in info.traceback)


def _killed_in_child(parent: int) -> str:
    if os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return "here"


def test_a_child_killed_is_done_again_here() -> None:
    assert forked(_killed_in_child, os.getpid()).result() == "here"


def _unpicklable(parent: int) -> object:
    if os.getpid() != parent:
        return lambda: None  # a lambda cannot be pickled
    return "here"


def test_an_answer_that_cannot_be_sent_is_done_again_here() -> None:
    assert forked(_unpicklable, os.getpid()).result() == "here"


def _large() -> bytes:
    return bytes(range(256)) * 40_000  # 10 MB: many times a pipe's buffer


def test_a_large_answer_arrives_whole() -> None:
    assert forked(_large).result() == _large()


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def test_cancel_stops_the_child() -> None:
    job = forked(_sleep, 60)
    pid = job._pid
    assert pid is not None
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 10
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left


def test_an_unused_answer_leaves_no_child() -> None:
    job = forked(_sleep, 60)
    pid = job._pid
    del job
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # type: ignore[arg-type]


def test_a_child_ends_with_a_killed_parent(tmp_path: Path) -> None:
    """A parent killed outright (SIGKILL: no clean-up runs) takes its child with it."""
    pid_file = tmp_path / "child"
    script = textwrap.dedent(
        f"""
        import os, time
        from recommender._forked import forked

        def child():
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(120)

        job = forked(child)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        child = int(pid_file.read_text())
    finally:
        parent.kill()
        parent.wait()
    for _ in range(200):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its killed parent")


def test_forked_is_generic_in_its_answer() -> None:
    job: Forked[int] = Forked(int, "5")  # no child: computed when asked
    assert job.result() == 5


# --- a run's forked stages give the bytes of a run without them ------------------------------

SAMPLE = Path(__file__).resolve().parents[1] / "sample_flows"


def _tree(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def test_a_run_with_children_writes_the_bytes_of_a_run_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segments, the self-check and the policy files computed in child processes (forced
    here: the sample is below the sizes that fork) give the same files as one process."""
    from recommender import pipeline
    from recommender.policy import writer

    started: list[str] = []
    real = _forked.forked

    def counting(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        job = real(fn, *args, **kwargs)
        started.append(f"{fn.__name__}:{job.in_child}")
        return job

    monkeypatch.setattr(_forked, "forked", counting)
    monkeypatch.setattr(writer, "forked", counting)
    monkeypatch.setattr(pipeline, "FORK_MIN_EDGES", 0)
    monkeypatch.setattr(writer, "FORK_MIN_FILES", 0)
    dialects = "kubernetes,calico,cilium"
    with_children = pipeline.recommend(SAMPLE / "hubble.jsonl.gz", dialects=dialects)
    with_children.write(tmp_path / "children")
    assert sorted(started) == [
        "_checks:True", "_report_files_but_html:True", "_segments:True", "_write_files:True"
    ]

    monkeypatch.setenv(_forked.NO_FORK_ENV, "1")
    started.clear()
    alone = pipeline.recommend(SAMPLE / "hubble.jsonl.gz", dialects=dialects)
    alone.write(tmp_path / "alone")
    assert all(entry.endswith(":False") for entry in started)
    assert _tree(tmp_path / "children") == _tree(tmp_path / "alone")
    assert with_children.report["self_check"] == alone.report["self_check"]
    assert with_children.report["self_check"]["coverage"] == 1.0
