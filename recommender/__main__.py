"""``python -m recommender`` is the ``recommend`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
