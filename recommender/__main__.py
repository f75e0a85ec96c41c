"""``python -m recommender`` is the ``recommend`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":  # not when a worker process imports the main module
    sys.exit(main())
