"""Where ingest and aggregation run: in this process, or as tasks on a Dask cluster.

``embedded`` (the default) streams every file through one process
(:func:`recommender.aggregate.edges.aggregate_edges`). ``dask`` cuts the input into tasks (one per
file, or per group of Parquet row groups), each of which reads its part and returns mergeable
partial aggregates (:func:`recommender.aggregate.edges.partial_edges`); the partials are merged in
input order on the cluster and classified here, so both engines give the same edge table and the
same policies (see :mod:`recommender.engine.dask_engine` and ``docs/scaling.md``).
"""

from __future__ import annotations

from typing import Final

from ..errors import ConfigError

__all__ = ["ENGINES", "check_engine"]

#: The names ``--engine`` accepts.
ENGINES: Final = ("dask", "embedded")


def check_engine(engine: str, scheduler: str | None = None) -> None:
    """Validate an engine choice before any work.

    Raises
    ------
    ConfigError
        On an unknown engine, a scheduler without the Dask engine, or the Dask engine without
        Dask installed.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    if engine != "dask":
        if scheduler is not None:
            raise ConfigError("a scheduler address needs the Dask engine (--engine dask).")
        return
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the Dask engine needs dask[distributed]: pip install 'recommender[dask]'."
        ) from None
