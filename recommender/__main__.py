"""``python -m recommender`` is the ``recommend`` command."""

from __future__ import annotations

from .cli import exit_now, main

if __name__ == "__main__":  # not when a worker process imports the main module
    exit_now(main(own_process=True))
