"""A Hubble reader worker process: its entry point and its loop (see :mod:`.parallel`).

A spawned worker unpickles its process object, which imports this module (and so the
:mod:`recommender.ingest` package) and runs :func:`run`, then :func:`serve`. A worker
converts Python lists to Arrow, and pyarrow imports pandas (about 0.5 s, on the run's critical
path) the first time it does that, only to check whether the list is a pandas object. A worker
never holds one, so :func:`run` marks pandas absent, in the worker's own interpreter and nowhere
else: importing this module changes nothing.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Final

#: Rows per batch a worker sends at most: batches that arrive while the workers read are
#: aggregated meanwhile, instead of all at the end (0.15 s of a 3 s run of 100k connections).
WORKER_BATCH_ROWS: Final = 16384


class _NoPandas:
    """A meta path finder that makes ``import pandas`` fail (pyarrow then does without)."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ImportError(
                "pandas is kept out of this process (a Hubble reader worker, or the "
                "`recommend run` command): nothing in it uses pandas"
            )


def block_pandas() -> None:
    """Make ``import pandas`` fail in this interpreter, unless pandas is imported already.
    Only for a process that is known not to need pandas (a worker; the ``recommend run``
    process, see :func:`recommender.cli.main`), before it converts Python objects with
    pyarrow."""
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


def run(*args: Any) -> None:
    """The worker: :func:`block_pandas`, then :func:`serve`,
    without the cyclic garbage collector: a worker's objects (rows, keys, caches) hold no
    reference cycles and are freed by reference counting, while the collector, walking the
    ever-growing tables of connections and waiting rows, took a tenth of the worker's time."""
    import gc
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the parent stops the workers
    # (and says so once); a worker that took it too would print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker inherits the CLI's handler
    _die_with_parent()
    gc.disable()
    block_pandas()
    serve(*args)


def _die_with_parent() -> None:
    """End with the parent however it ends (:func:`recommender._forked.die_with_parent`): its
    clean-up (``close`` at exit) does not run when it is killed, and a worker blocked writing
    to a full queue nobody reads would live on forever."""
    import multiprocessing

    from .._forked import die_with_parent

    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_parent(parent.pid)


def serve(
    index: int, n: int, requests: Any, responses: Any, batch_rows: int, spool: str | None = None
) -> None:
    """A worker process: an ordinary Hubble reader on its share of every file's lines.

    Its batches reach the parent as Arrow IPC files under the ``spool`` prefix (RAM-backed,
    mapped by the parent: one copy of the data in all) or, without one or when a file cannot be
    written (a full /dev/shm), as bytes through the queue (pickled, piped and unpickled: five
    copies, 0.4 CPU s per 100k rows, more than the rest of the transport)."""
    import itertools
    import os
    from pathlib import Path

    import pyarrow as pa

    from .hubble import HubbleReader
    from .ledger import IngestLedger
    from .schema import FLOW_SCHEMA

    reader = HubbleReader(IngestLedger(), batch_rows=min(batch_rows, WORKER_BATCH_ROWS))
    numbers = itertools.count()

    def put(batch: pa.RecordBatch | None) -> None:
        if batch is None or not batch.num_rows:
            return
        if spool is not None:
            path = f"{spool}{index}-{next(numbers)}.arrow"
            try:
                with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, FLOW_SCHEMA) as out:
                    out.write_batch(batch)
            except (OSError, pa.ArrowException):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            else:
                responses.put(("file", path))
                return
        responses.put(("batch", batch.serialize().to_pybytes()))

    while True:
        message = requests.get()
        reader.ledger = IngestLedger()
        try:
            if message[0] == "file":
                file = message[1]
                for first, count, error, batches in reader.iter_chunks(Path(file), index, n):
                    for batch in batches:
                        put(batch)
                    if error and index == 0:
                        reader.ledger.read += 1
                        reader.ledger.skip(file, first + count, "truncated-file", error)
                put(reader.builder.flush())
            elif message[0] == "finish":
                for batch in reader.finish():
                    put(batch)
            responses.put(("end", reader.ledger))
        except Exception as exc:  # sent to the parent, which raises it
            responses.put(("error", exc))
            return
        if message[0] == "finish":
            return
