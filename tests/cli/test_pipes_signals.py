"""Pipes (``recommend -``, ``/dev/stdin``) and stopping signals (Ctrl-C, SIGTERM) on real
subprocesses: the exit status, the one line printed, and no half-written output."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"
HUBBLE = SAMPLES / "hubble.jsonl.gz"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _recommend(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "recommender", *args],
        input=stdin,
        capture_output=True,
        env=_env(),
        timeout=300,
        check=False,
    )


def _policies(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.yaml"))
    }


def test_pipe_into_dash_writes_the_same_policies_as_the_file(tmp_path: Path) -> None:
    from_file = _recommend(str(HUBBLE), "-o", str(tmp_path / "file"))
    assert from_file.returncode == 0, from_file.stderr
    data = gzip.decompress(HUBBLE.read_bytes())
    piped = _recommend("-", "-o", str(tmp_path / "pipe"), stdin=data)
    assert piped.returncode == 0, piped.stderr
    assert _policies(tmp_path / "pipe") == _policies(tmp_path / "file")
    assert _policies(tmp_path / "pipe")


def test_dev_stdin_and_compressed_pipe(tmp_path: Path) -> None:
    """``/dev/stdin`` is a stream too, and a gzip stream is decompressed (format detected)."""
    result = _recommend("run", "/dev/stdin", "-o", str(tmp_path / "out"), stdin=HUBBLE.read_bytes())
    assert result.returncode == 0, result.stderr
    assert b"wrote 11 policies" in result.stdout


def test_parquet_and_calico_through_a_pipe(tmp_path: Path) -> None:
    parquet = _recommend("-", "--dry-run", stdin=(SAMPLES / "flows.parquet").read_bytes())
    assert parquet.returncode == 0, parquet.stderr
    assert b"kind: NetworkPolicy" in parquet.stdout
    calico = _recommend(
        "ingest", "-", "-o", str(tmp_path / "c.parquet"),
        stdin=(SAMPLES / "calico.jsonl.gz").read_bytes(),
    )
    assert calico.returncode == 0, calico.stderr
    assert (tmp_path / "c.parquet").is_file()


def test_follow_pipe_stopped_by_ctrl_c_recommends_on_what_was_read(tmp_path: Path) -> None:
    """``hubble observe --follow | recommend -``: the writer never ends; Ctrl-C stops the read
    and the run goes on with the records read so far."""
    data = gzip.decompress(HUBBLE.read_bytes())
    proc = subprocess.Popen(
        [sys.executable, "-m", "recommender", "-", "-o", str(tmp_path / "out")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.flush()  # the pipe stays open, as with --follow
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    proc.stdin.close()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert b"Ctrl-C" in err
    assert (tmp_path / "out" / "report.json").is_file()
    assert b"wrote" in out


@pytest.fixture(scope="module")
def large_hubble(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 500 MB of Hubble JSON lines: the sample 24 times, each copy on another day, so
    that no copy is a duplicate of another (the compiled scanner skips duplicate events so
    fast that `ingest` of repeated copies finished within the second). Reader workers start."""
    path = tmp_path_factory.mktemp("large") / "large.jsonl"
    data = gzip.decompress(HUBBLE.read_bytes())
    with path.open("wb") as out:
        for day in range(24):
            out.write(data.replace(b'"2026-01-05T', f'"2026-01-{day + 5:02d}T'.encode()))
    return path


def _stop(args: list[str], sig: int, after: float) -> tuple[int, str]:
    """Run ``recommend ARGS`` in its own process group and send ``sig`` to the whole group
    ``after`` seconds in, as a terminal does for Ctrl-C."""
    # The pure-Python reader: the compiled scanner reads this input in about a second on a
    # quiet machine, and the signal must arrive while the command is still at work.
    proc = subprocess.Popen(
        [sys.executable, "-m", "recommender", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**_env(), "RECOMMENDER_NO_SCANNER": "1"},
        start_new_session=True,
    )
    time.sleep(after)
    with contextlib.suppress(ProcessLookupError):  # finished already
        os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, (out + err).decode()


_DENY = (
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
    "metadata: {name: deny, namespace: shop}\nspec: {podSelector: {}}\n"
)


@pytest.mark.parametrize(
    ("command", "sig", "status"),
    [
        ("run", signal.SIGINT, 130),
        ("run", signal.SIGTERM, 143),
        ("ingest", signal.SIGINT, 130),
        ("graph", signal.SIGINT, 130),
        ("evaluate", signal.SIGINT, 130),
    ],
)
def test_stopped_one_second_in(
    tmp_path: Path, large_hubble: Path, command: str, sig: int, status: int
) -> None:
    out = tmp_path / "out"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "keep.yaml").write_text(_DENY)
    if command == "run":
        args = [str(large_hubble), "-o", str(out)]
    elif command == "ingest":
        args = ["ingest", str(large_hubble), "-o", str(out) + ".parquet"]
    elif command == "graph":
        args = ["graph", str(large_hubble), "-o", str(out) + ".html"]
    else:
        args = ["evaluate", str(earlier), str(large_hubble)]
    code, text = _stop(args, sig, 1.0)
    assert code == status, text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "bug" not in text
    # nothing half-written, earlier output untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]
    assert (earlier / "keep.yaml").read_text() == _DENY


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.update(int(x) for x in task.read_text().split())
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_reader_workers_end_with_a_killed_parent(large_hubble: Path, tmp_path: Path) -> None:
    # SIGKILL (the OOM killer, a CI timeout) runs none of the parent's clean-up: the kernel
    # must end its reader workers, or they would wait on their queues forever.
    proc = subprocess.Popen(
        [sys.executable, "-m", "recommender", str(large_hubble), "-o", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**_env(), "RECOMMENDER_NO_SCANNER": "1"},
        start_new_session=True,
    )
    workers: set[int] = set()
    deadline = time.monotonic() + 20
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        workers = _children(proc.pid)
    assert len(workers) >= 2, "the reader workers did not start"
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {w for w in workers if Path(f"/proc/{w}").exists()
                 and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]}  # fmt: skip
    assert not alive, f"reader workers outlived their parent: {sorted(alive)}"
