"""The entry point of a Hubble reader worker process (see :mod:`recommender.ingest.parallel`).

It lives outside :mod:`recommender.ingest` so that a spawned worker runs :func:`run` before that
package is imported there (unpickling the process object imports only this module). A worker
converts Python lists to Arrow, and pyarrow imports pandas (about 0.5 s, on the run's critical
path) the first time it does that, only to check whether the list is a pandas object. A worker
never holds one, so :func:`run` marks pandas absent, in the worker's own interpreter and nowhere
else: importing this module changes nothing.
"""

from __future__ import annotations

import sys
from typing import Any


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
    """The worker: :func:`block_pandas`, then :func:`recommender.ingest.parallel._worker`,
    without the cyclic garbage collector: a worker's objects (rows, keys, caches) hold no
    reference cycles and are freed by reference counting, while the collector, walking the
    ever-growing tables of connections and waiting rows, took a tenth of the worker's time."""
    import gc

    gc.disable()
    block_pandas()
    from .ingest.parallel import _worker

    _worker(*args)
