"""The Hubble reader on two worker processes gives exactly what it gives in one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from recommender import IngestLedger, read_flows
from recommender.ingest import parallel

ROOT = Path(__file__).resolve().parents[2]


def _both(paths) -> tuple[pa.Table, pa.Table, IngestLedger, IngestLedger]:
    one, two = IngestLedger(), IngestLedger()
    sequential = read_flows(paths, ledger=one, workers=1)
    parallel_ = read_flows(paths, ledger=two, workers=2)
    return sequential, parallel_, one, two


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("source_file", "ascending"), ("source_row", "ascending")])


def test_sample_same_rows_and_ledger():
    seq, par, one, two = _both(ROOT / "sample_flows" / "hubble.jsonl.gz")
    assert _sorted(seq).equals(_sorted(par))
    assert (one.read, one.used, one.duplicate, one.reply) == (
        two.read,
        two.used,
        two.duplicate,
        two.reply,
    )
    assert two.balanced


def test_real_captures_same_rows(shared: Path):
    seq, par, one, two = _both(shared / "datasets" / "hubble-otel-testdata")
    assert _sorted(seq).equals(_sorted(par))
    assert one.to_dict()["skipped"] == two.to_dict()["skipped"]
    assert two.balanced and two.read == 1916


def test_parallel_output_order_is_deterministic():
    path = ROOT / "sample_flows" / "hubble.jsonl.gz"
    assert read_flows(path, workers=2).equals(read_flows(path, workers=2))


def test_bad_lines_are_counted_by_workers(tmp_path: Path):
    lines = [
        '{"flow":{"time":"2026-01-05T09:00:00Z","verdict":"FORWARDED",'
        '"IP":{"source":"10.0.0.1","destination":"10.0.0.2"},'
        f'"l4":{{"TCP":{{"source_port":{40000 + i},"destination_port":80}}}},'
        '"source":{"namespace":"a","pod_name":"x"},"destination":{"namespace":"a",'
        '"pod_name":"y"},"is_reply":false}}'
        for i in range(10)
    ]
    lines.insert(3, '{"flow": {"time": ')
    lines.insert(
        7,
        '{"flow":{"IP":{"source":"bad","destination":"10.0.0.2"},'
        '"l4":{"TCP":{"source_port":40001,"destination_port":80}},'
        '"time":"2026-01-05T09:00:00Z"}}',
    )
    path = tmp_path / "flows.json"
    path.write_text("\n".join(lines) + "\n")
    ledger = IngestLedger()
    table = read_flows(path, ledger=ledger, workers=2)
    assert table.num_rows == 10
    assert dict(ledger.skipped) == {"malformed-json": 1, "invalid-ip": 1}
    assert ledger.balanced and ledger.read == 12


def test_falls_back_to_one_process_when_workers_cannot_start(monkeypatch):
    def broken(self) -> bool:
        self._failed = True
        return False

    monkeypatch.setattr(parallel.ParallelHubbleReader, "_start", broken)
    path = ROOT / "sample_flows" / "hubble.jsonl.gz"
    assert read_flows(path, workers=2).equals(read_flows(path, workers=1))


def test_default_workers_by_size(tmp_path: Path):
    small = tmp_path / "small.json"
    small.write_text("{}")
    assert parallel.default_workers([small]) == 1


def test_a_worker_reads_without_importing_pandas():
    """A worker's interpreter marks pandas absent (pyarrow would import it, 0.5 s of every
    parallel run, only to check that a list is not a pandas object): the reader gives the same
    rows there, and pandas is never imported. Importing the parallel reader elsewhere changes
    nothing: pandas still imports (notebooks need it)."""
    sample = str(ROOT / "sample_flows" / "hubble.jsonl.gz")
    code = (
        "import sys\n"
        "from recommender.ingest._hubble_worker import block_pandas\n"
        "block_pandas()\n"
        "from recommender import read_flows\n"
        f"table = read_flows({sample!r}, workers=1)\n"
        "print(table.num_rows, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rows = read_flows(ROOT / "sample_flows" / "hubble.jsonl.gz", workers=1).num_rows
    assert out.stdout.split() == [str(rows), "False"]
    code = (
        "import recommender.ingest.parallel\n"
        "from recommender import read_flows\n"
        f"table = read_flows({sample!r}, workers=2)\n"
        "print(len(table.to_pandas()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(rows)]


def test_prestarted_workers_are_taken_by_the_next_read():
    """``recommend`` starts the workers before it imports the pipeline (their imports
    overlap); the read that follows takes them and gives the same rows and ledger."""
    path = ROOT / "sample_flows" / "hubble.jsonl.gz"
    parallel.prestart([path], workers=2)
    assert len(parallel._WARM) == 1
    warm = parallel._WARM[0]
    ledger = IngestLedger()
    table = read_flows(path, ledger=ledger, workers=2)
    assert parallel._WARM == [] and not warm._procs  # taken, and stopped at the end
    one = IngestLedger()
    assert _sorted(table).equals(_sorted(read_flows(path, ledger=one, workers=1)))
    assert (ledger.read, ledger.used, ledger.reply) == (one.read, one.used, one.reply)
    parallel.prestart([path / "missing"], workers=2)  # best effort: nothing happens
    parallel.prestart([ROOT / "sample_flows" / "flows.parquet"], workers=2)
    assert parallel._WARM == []


def test_the_command_line_starts_workers_before_parsing(tmp_path: Path, monkeypatch):
    """`recommend FILE --workers 2` starts the workers from the raw arguments (before Typer
    and the pipeline load), and the run takes them: the output is that of one process."""
    from recommender import cli

    path = str(ROOT / "sample_flows" / "hubble.jsonl.gz")
    started: list[tuple] = []
    original = parallel.prestart

    def spy(*args):
        started.append(args)
        original(*args)

    monkeypatch.setattr(parallel, "prestart", spy)
    cli._prestart_workers(["-o", str(tmp_path / "x"), "--engine", "dask", path])
    cli._prestart_workers([path, "--workers=1"])
    assert parallel._WARM == []
    assert cli.main([path, "-o", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert started[-2:] == [([path], None, 2), ([path], None, 2)]  # main's, then run's (no-op)
    assert parallel._WARM == []
    assert cli.main([path, "-o", str(tmp_path / "one"), "--workers", "1"]) == 0
    for name in ("report.json", "report.md"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_prestarted_for_another_file_starts_afresh(tmp_path: Path):
    """Workers prestarted (and already reading) one file, then asked for another, are
    replaced: the rows are those of the file asked for."""
    import shutil

    sample = ROOT / "sample_flows" / "hubble.jsonl.gz"
    other = tmp_path / "other.jsonl.gz"
    shutil.copy(sample, other)
    parallel.prestart([sample], workers=2)
    table = read_flows(other, workers=2)
    assert parallel._WARM == []
    assert set(table.column("source_file").to_pylist()) == {str(other)}
    assert _sorted(table).equals(_sorted(read_flows(other, workers=1)))


def test_modules_imported_during_the_read_exist():
    """The pipeline imports the later stages' modules on a thread while parallel workers
    read; a renamed module would make that silently useless."""
    import importlib

    from recommender.pipeline import _LATER_MODULES

    for name in _LATER_MODULES:
        importlib.import_module(name)


def test_prestart_forks_only_a_single_threaded_process():
    """The command line prestarts before any thread exists: the workers are forked (no second
    start-up of imports) and read the same rows. With a Python thread running, or DuckDB
    loaded, they are spawned instead (a fork would copy locks those threads hold)."""
    code = (
        "import sys, threading\n"
        "from recommender.ingest import parallel, read_flows\n"
        "path = sys.argv[1]\n"
        "if sys.argv[2] == 'thread':\n"
        "    threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
        "if sys.argv[2] == 'duckdb':\n"
        "    import duckdb\n"
        "parallel.prestart([path], workers=2)\n"
        "reader = parallel._WARM[0]\n"
        "methods = {type(p)._start_method for p in reader._procs}\n"
        "print(*methods, read_flows(path, workers=2).num_rows)\n"
    )
    path = str(ROOT / "sample_flows" / "hubble.jsonl.gz")
    rows = read_flows(path, workers=1).num_rows
    for case, method in (("none", "fork"), ("thread", "spawn"), ("duckdb", "spawn")):
        out = subprocess.run(
            [sys.executable, "-c", code, path, case], capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == [method, str(rows)], case


def _spooled(monkeypatch) -> list[str]:
    """Record the files the parent maps (parallel._read_spooled), in order."""
    taken: list[str] = []
    original = parallel._read_spooled

    def spy(path: str) -> pa.RecordBatch:
        taken.append(path)
        return original(path)

    monkeypatch.setattr(parallel, "_read_spooled", spy)
    return taken


def test_batches_travel_as_mapped_files_and_none_is_left(monkeypatch):
    """Where /dev/shm is, a worker writes each batch there as an Arrow IPC file, the parent
    maps it and removes it at once: same rows, and no file of the run is left behind."""
    if parallel._spool_dir() is None:
        pytest.skip("no writable /dev/shm on this system: batches go through the queue")
    taken = _spooled(monkeypatch)
    path = ROOT / "sample_flows" / "hubble.jsonl.gz"
    table = read_flows(path, workers=2)
    assert taken and all(name.startswith("/dev/shm/recommender-") for name in taken)
    assert not [name for name in taken if Path(name).exists()]
    assert _sorted(table).equals(_sorted(read_flows(path, workers=1)))


def test_a_batch_that_cannot_be_spooled_goes_through_the_queue(monkeypatch, tmp_path: Path):
    """A spool file that cannot be written (a full or missing /dev/shm) is no error: the
    batch goes through the queue instead, and the rows are the same."""
    taken = _spooled(monkeypatch)
    missing = tmp_path / "gone"
    monkeypatch.setattr(parallel, "_spool_dir", lambda: str(missing))
    path = ROOT / "sample_flows" / "hubble.jsonl.gz"
    ledger = IngestLedger()
    table = read_flows(path, ledger=ledger, workers=2)
    assert taken == [] and not missing.exists()
    assert _sorted(table).equals(_sorted(read_flows(path, workers=1)))
    assert ledger.balanced


def test_close_removes_batches_never_taken(monkeypatch, tmp_path: Path):
    """Workers stopped early may have left batches; close() removes every file of the
    reader's spool prefix, and nothing else."""
    monkeypatch.setattr(parallel, "_spool_dir", lambda: str(tmp_path))
    reader = parallel.ParallelHubbleReader(IngestLedger(), workers=2)
    assert reader._spool is not None and reader._spool.startswith(str(tmp_path))
    left = [Path(f"{reader._spool}{i}-0.arrow") for i in range(2)]
    for name in left:
        name.write_bytes(b"x")
    other = tmp_path / "recommender-other-0-0.arrow"
    other.write_bytes(b"y")
    reader.close()
    assert not any(name.exists() for name in left) and other.exists()
