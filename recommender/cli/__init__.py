"""The ``recommend`` command: a thin shell over the library.

Each command parses its options, calls one library function, renders the result and maps
errors to exit codes: 0 success, 1 a finding that should fail a pipeline (see each command),
2 bad input or usage, 3 a failed self-check of ``run`` (its files are written), 70 an internal
error (a bug: please report it).
"""

from __future__ import annotations

# The commands register themselves on ``app`` in this order (the order of ``recommend --help``).
# isort: off
from . import ingest, run, graph, evaluate, diff, job, review  # noqa: F401
# isort: on
from ._app import app
from ._main import _console, _prestart_workers, exit_now, main

__all__ = ["_console", "_prestart_workers", "app", "exit_now", "main"]
