"""``python -m recommender`` is the ``recommend`` command."""

from __future__ import annotations

import sys


def console() -> None:
    """The ``recommend`` console script. Ctrl-C while the program is still starting (importing
    its modules) also ends it with one line and exit status 130, not a traceback."""
    try:
        from .cli import _console
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; nothing was written.\n")
        raise SystemExit(130) from None
    _console()


if __name__ == "__main__":  # not when a worker process imports the main module
    console()
