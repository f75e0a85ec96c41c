"""Logs of a scheduled run: one line per event, as text or as JSON (``--log-format json``).

Every record of the ``recommender`` loggers goes to standard error. Records may carry fields
through ``extra={...}`` (``event``, ``files``, ``rows``, ...); the JSON format writes them as keys
beside ``time``, ``level``, ``logger`` and ``message``, the text format as ``key=value`` after the
message. Log collectors (Loki, Fluent Bit, Cloud Logging) parse the JSON lines as they are.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "setup_logging"]

#: The values ``--log-format`` accepts.
LOG_FORMATS: Final = ("text", "json")

_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, keys sorted."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        return json.dumps(payload, sort_keys=True, default=str)


class TextFormatter(logging.Formatter):
    """``TIME LEVEL message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(_fields(record).items()) if k != "event")
        line = f"{_time(record)} {record.levelname:<7} {record.getMessage()}"
        return f"{line} {extra}" if extra else line


def setup_logging(
    fmt: str = "text", level: str = "info", stream: TextIO | None = None
) -> Callable[[], None]:
    """Send the ``recommender`` loggers' records to ``stream`` (standard error) in ``fmt``.

    Parameters
    ----------
    fmt : {"text", "json"}
        The line format.
    level : str
        The lowest level written: ``debug``, ``info``, ``warning`` or ``error``.
    stream : file, optional
        Where to write (standard error by default).

    Returns
    -------
    callable
        Undoes the setup (removes the handler, restores the level and propagation): for
        callers such as tests that run several commands in one process.
    """
    logger = logging.getLogger("recommender")
    before = (logger.level, logger.propagate)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]

    return restore
