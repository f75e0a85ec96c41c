"""The entry point of a Hubble reader worker process (see :mod:`recommender.ingest.parallel`).

It lives outside :mod:`recommender.ingest` so that its first lines run before that package is
imported in the fresh (spawned) worker. A worker converts Python lists to Arrow, and pyarrow
imports pandas (about 0.5 s, on the run's critical path) the first time it does that, only to
check whether the list is a pandas object. A worker never holds one, so pandas is marked
absent here, in the worker's own interpreter and nowhere else.
"""

from __future__ import annotations

import sys
from typing import Any


class _NoPandas:
    """A meta path finder that makes ``import pandas`` fail (pyarrow then does without)."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is not used in a Hubble worker")


if "pandas" not in sys.modules:
    sys.meta_path.insert(0, _NoPandas())


def run(*args: Any) -> None:
    """Run :func:`recommender.ingest.parallel._worker` with ``args``."""
    from .ingest.parallel import _worker

    _worker(*args)
