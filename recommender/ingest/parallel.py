"""Reading large Hubble files on several cores.

Everything the Hubble reader remembers (recently seen connections, rows waiting for a later
DROPPED event) belongs to one connection, and every event that starts or continues a connection
carries its two ports. So events can be dealt out to worker processes by the sum of
``source_port`` and ``destination_port`` (read from the line's bytes, without decoding it; the
sum is the same for a reply, whose ports are swapped), each worker runs an ordinary
:class:`~recommender.ingest.hubble.HubbleReader` on its share, and no connection is split
between workers. Events without ports (ICMP) all go to the first worker.

Each worker reads the file itself and keeps its own share of the lines (reading is cheap; sending
the lines through a pipe is not). The parent takes one record batch from each worker in turn,
so the output is the same on every run, and the workers' bounded queues keep memory bounded. A
batch travels as an Arrow IPC file in /dev/shm that the parent maps and removes (the queue only
carries its name), or, where that is not possible, as bytes through the queue.
Workers stop with the run; when they cannot start, the parent reads the input itself. They are
spawned (fresh interpreters), except that the command line forks them (see
:meth:`ParallelHubbleReader.spawn`). A spawned worker runs only this package's code, never the
caller's script: a script read from standard input (``python - <<EOF``) has no file a new
interpreter could run again, and one without an ``if __name__ == "__main__":`` guard would
start its whole run again in every worker (see :func:`_without_main_script`).
:func:`prestart` starts them (and their read of the first file) before the caller has imported
the rest of the pipeline; the ``recommend`` command does that from its raw arguments, and the
next read takes them.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import multiprocessing as mp
import os
import queue
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from ..errors import RecommenderError
from . import _hubble_worker
from ._base import FlowReader
from ._common import DEFAULT_BATCH_ROWS
from ._source import read_head
from .hubble import HubbleReader
from .ledger import IngestLedger
from .schema import FLOW_SCHEMA

__all__ = ["ParallelHubbleReader", "default_workers", "prestart", "take_prestarted"]

#: Below this many bytes of Hubble input, starting workers costs more than it saves.
PARALLEL_MIN_BYTES: Final = 64 << 20
#: Seconds to wait for a worker to start (imports included) before reading in this process.
_START_TIMEOUT: Final = 120.0
_log = logging.getLogger(__name__)


def default_workers(paths: list[Path]) -> int:
    """2 workers for large inputs on a machine with several cores, else 1 (sequential)."""
    cores = mp.cpu_count()
    size = 0
    for path in paths:
        with contextlib.suppress(OSError):
            size += path.stat().st_size
    return 2 if cores >= 2 and size >= PARALLEL_MIN_BYTES else 1


def _spool_dir() -> str | None:
    """A RAM-backed folder where workers can leave batches for the parent to map (Linux's
    /dev/shm), or None: then batches go through the queue."""
    path = "/dev/shm"
    return path if os.path.isdir(path) and os.access(path, os.W_OK) else None


def _read_spooled(path: str) -> pa.RecordBatch:
    """The batch a worker wrote to ``path``: mapped, not copied; the file is removed at once
    (the mapping keeps its pages until the batch's last array is gone)."""
    try:
        return pa.ipc.open_stream(pa.memory_map(path)).read_next_batch()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


class ParallelHubbleReader(FlowReader):
    """The Hubble reader on ``workers`` processes (see the module docstring)."""

    name = "hubble"

    def __init__(
        self, ledger: IngestLedger, *, batch_rows: int = DEFAULT_BATCH_ROWS, workers: int = 2
    ) -> None:
        super().__init__(ledger, batch_rows=batch_rows)
        self.workers = workers
        self._procs: list[Any] = []
        self._requests: list[Any] = []
        self._responses: list[Any] = []
        self._failed = False
        folder = _spool_dir()
        # Where the workers leave their batches (see _hubble_worker.serve); removed by close().
        self._spool = (
            os.path.join(folder, f"recommender-{os.getpid()}-{secrets.token_hex(4)}-")
            if folder is not None
            else None
        )
        self._ready = False
        self._at_exit = False
        self._sent: str | None = None
        # JSON-array files are small: read in this process.
        self._local = HubbleReader(ledger, batch_rows=batch_rows)

    def _start(self) -> bool:
        """Start the workers (unless :meth:`spawn` did) and wait until they are ready; False
        (and read in this process) when they cannot start."""
        if self._ready:
            return True
        if self._failed or not self.spawn():
            return False
        try:
            for index in range(self.workers):
                if self._get(index, _START_TIMEOUT)[0] != "end":
                    raise RuntimeError("a Hubble worker did not answer")
        except (OSError, RuntimeError, queue.Empty) as exc:
            _log.warning("Hubble workers did not start (%s); reading in one process.", exc)
            self.close()
            self._failed = True
            return False
        self._ready = True
        return True

    def spawn(self, fork: bool = False) -> bool:
        """Start the worker processes without waiting for them; False when they cannot start.

        Workers are spawned (a fresh interpreter, whose imports take about half a second)
        unless ``fork`` is set and this process has a single thread and can fork: then they
        are forked, start at once and share the imports already done. :func:`prestart` asks for
        that (the command line calls it before anything starts a thread); a library caller may
        hold threads (DuckDB's, a notebook's), which a forked child would inherit half-held.
        """
        if self._procs:
            return True
        if self._failed:
            return False
        if not self._at_exit:
            # A run stopped half-way (Ctrl-C, SIGTERM) never reaches finish(): stop the
            # workers and remove their spooled batches at exit (idempotent).
            import atexit

            atexit.register(self.close)
            self._at_exit = True
        ctx: Any = mp.get_context("fork" if fork and _can_fork() else "spawn")
        try:
            for _ in range(self.workers):
                requests, responses = ctx.Queue(), ctx.Queue(maxsize=4)
                proc = ctx.Process(
                    target=_hubble_worker.run,
                    args=(
                        len(self._procs),
                        self.workers,
                        requests,
                        responses,
                        self.builder.batch_rows,
                        self._spool,
                    ),
                    daemon=True,
                )
                with _sigint_blocked(), _without_main_script(ctx):  # see both
                    proc.start()
                self._procs.append(proc)
                self._requests.append(requests)
                self._responses.append(responses)
            for requests in self._requests:
                requests.put(("ping",))
        except (OSError, RuntimeError) as exc:
            _log.warning("Hubble workers did not start (%s); reading in one process.", exc)
            self.close()
            self._failed = True
            return False
        return True

    def _get(self, index: int, timeout: float | None = None) -> Any:
        """The next response of worker ``index``; RuntimeError if the worker died."""
        waited = 0.0
        while True:
            try:
                return self._responses[index].get(timeout=1.0)
            except queue.Empty:
                waited += 1.0
                if not self._procs[index].is_alive():
                    raise RuntimeError(
                        f"a Hubble worker stopped (exit code {self._procs[index].exitcode})"
                    ) from None
                if timeout is not None and waited >= timeout:
                    raise

    def _gather(self) -> Iterator[pa.RecordBatch]:
        """One batch from each worker in turn until every worker says it is done."""
        done = [False] * len(self._procs)
        while not all(done):
            for index, finished in enumerate(done):
                if finished:
                    continue
                try:
                    response = self._get(index)
                except RuntimeError:
                    self.close()
                    raise
                if response[0] == "file":
                    yield _read_spooled(response[1])
                elif response[0] == "batch":
                    yield pa.ipc.read_record_batch(pa.py_buffer(response[1]), FLOW_SCHEMA)
                elif response[0] == "end":
                    self.ledger.merge(response[1])
                    done[index] = True
                else:
                    self.close()
                    if isinstance(response[1], RecommenderError):
                        raise response[1]
                    raise RuntimeError(f"a Hubble worker failed: {response[1]!r}")

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        if self._sent is not None and self._sent != str(path):
            self.close()  # prestarted for another file: start afresh
        if read_head(path, 4096).lstrip().startswith(b"[") or not self._start():
            yield from self._local.read(path)
            return
        if self._sent is None:
            self.send(path)
        self._sent = None
        yield from self._gather()

    def send(self, path: Path) -> None:
        """Ask the workers to read ``path`` now; its batches wait (at most 4 per worker) for
        the :meth:`read` of the same path, which then sends nothing."""
        for requests in self._requests:
            requests.put(("file", str(path)))
        self._sent = str(path)

    def finish(self) -> Iterator[pa.RecordBatch]:
        yield from self._local.finish()
        if not self._procs:
            return
        try:
            for requests in self._requests:
                requests.put(("finish",))
            yield from self._gather()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers."""
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)
        self._procs.clear()
        self._requests.clear()
        self._responses.clear()
        self._ready = False
        self._sent = None
        if self._spool is not None:  # batches written but never taken (stopped early)
            for left in glob.glob(glob.escape(self._spool) + "*"):
                with contextlib.suppress(OSError):
                    os.unlink(left)

    def adopt(self, ledger: IngestLedger) -> None:
        """Count into ``ledger`` from now on (a reader started by :func:`prestart`)."""
        self.ledger = ledger
        self._local.ledger = ledger


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT held back (not lost) in this thread while a worker starts: the worker inherits
    the mask and ignores SIGINT once it runs (Ctrl-C reaches the whole process group, and a
    worker still importing would print a traceback); the parent gets it when it is unblocked."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    old = mask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _without_main_script(ctx: Any) -> Iterator[None]:
    """While a worker is spawned, keep multiprocessing from telling it to run the caller's
    script (the ``__main__`` module's file) before the worker's own code.

    Spawning starts a fresh interpreter that first runs the parent's main script again, to
    find the functions the parent named there. A worker needs none (its code is
    :func:`recommender.ingest._hubble_worker.run`), and the script is a problem: ``python -``
    names ``<stdin>``, which no new interpreter can read (the worker died with a traceback and
    the read fell back to one process), and a script without an ``if __name__ == "__main__":``
    guard would run its whole pipeline again in each worker. multiprocessing decides from
    ``__main__.__file__`` when it starts the process, so that attribute is hidden for that
    moment (a module run with ``python -m`` has a ``__spec__`` and is imported by name, which
    runs nothing and is left alone). Forked workers copy the parent and need nothing.
    """
    main = sys.modules.get("__main__")
    hide = (
        ctx.get_start_method() != "fork"
        and main is not None
        and getattr(main, "__spec__", None) is None
        and "__file__" in vars(main)
    )
    if not hide:
        yield
        return
    script = main.__file__  # type: ignore[union-attr]
    del main.__file__  # type: ignore[union-attr]
    try:
        yield
    finally:
        main.__file__ = script  # type: ignore[union-attr]


def _can_fork() -> bool:
    """True when forking is safe here: Linux (macOS system libraries do not survive a fork,
    which is why Python spawns there), one Python thread, and DuckDB not loaded (its worker
    threads would be copied half-held). The C threads that importing pyarrow and NumPy starts
    (jemalloc's background thread, OpenBLAS's pool) are idle then, and both libraries register
    fork handlers for them."""
    return (
        sys.platform.startswith("linux")
        and "fork" in mp.get_all_start_methods()
        and threading.active_count() == 1
        and "duckdb" not in sys.modules
    )


#: Readers whose workers :func:`prestart` started, for the next read to take.
_WARM: list[ParallelHubbleReader] = []


def prestart(paths: Any, format: str | None = None, workers: int | None = None) -> None:
    """Start the Hubble workers of a coming read of ``paths`` now, so that their start (about
    half a second of imports) overlaps what the caller does meanwhile; the next
    :class:`~recommender.ingest.FlowBatches` with as many workers takes them. Best effort:
    nothing happens when the input is not large Hubble JSON or anything goes wrong. The workers
    start reading the first Hubble file at once; its batches wait for the read."""
    from ._detect import detect_format
    from ._source import expand_paths_explicit, is_stream

    if _WARM:
        return  # already started (the command line starts them as early as it can)
    if isinstance(paths, str | Path):
        paths = [paths]
    try:
        if any(is_stream(p) for p in paths):
            return  # a stream is read once, by the read itself
        files = [path for path, _ in expand_paths_explicit(paths)]
        hubble = [p for p in files if (format or detect_format(p)) == "hubble"]
        n = default_workers(hubble) if workers is None else max(int(workers), 1)
        if n < 2 or not hubble or read_head(hubble[0], 4096).lstrip().startswith(b"["):
            return
    except Exception as exc:  # a hint only: the read itself reports any real problem
        _log.debug("not prestarting Hubble workers: %s", exc)
        return
    reader = ParallelHubbleReader(IngestLedger(), workers=n)
    if reader.spawn(fork=True):
        reader.send(hubble[0])  # each worker starts on it as soon as it has started
        _WARM.append(reader)


def take_prestarted(workers: int, batch_rows: int) -> ParallelHubbleReader | None:
    """A reader :func:`prestart` started with ``workers`` workers, or None."""
    for reader in _WARM:
        if reader.workers == workers and reader.builder.batch_rows == batch_rows:
            _WARM.remove(reader)
            return reader
    return None
