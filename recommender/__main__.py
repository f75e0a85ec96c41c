"""``python -m recommender`` is the ``recommend`` command."""

from __future__ import annotations

import contextlib
import signal
import sys


def _terminated_early(signum: int, frame: object) -> None:
    sys.stderr.write("error: terminated; nothing was written.\n")
    raise SystemExit(143)


def console() -> None:
    """The ``recommend`` console script. Ctrl-C or SIGTERM while the program is still starting
    (importing its modules) also ends it with one line and exit status 130 or 143."""
    with contextlib.suppress(ValueError, OSError):  # not the main thread
        signal.signal(signal.SIGTERM, _terminated_early)
    try:
        from .cli import _console
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; nothing was written.\n")
        raise SystemExit(130) from None
    _console()


if __name__ == "__main__":  # not when a worker process imports the main module
    console()
