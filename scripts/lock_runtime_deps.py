"""Write deploy/requirements.lock: the runtime dependencies of recommender, pinned.

The closure of ``[project].dependencies`` (no extras) as installed in the current environment
(``pip install -e .`` first), one ``name==version`` a line, sorted. The container image
(deploy/Dockerfile) installs exactly these versions.

    python scripts/lock_runtime_deps.py            # rewrite the lock file
    python scripts/lock_runtime_deps.py --check    # exit 1 when it is out of date
"""

from __future__ import annotations

import platform
import re
import sys
from importlib.metadata import requires, version
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

LOCK = Path(__file__).resolve().parents[1] / "deploy" / "requirements.lock"


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def closure() -> dict[str, str]:
    """Installed version of every package the core dependencies need, by normalised name."""
    env = {**default_environment(), "extra": ""}
    pinned: dict[str, str] = {}
    todo = [Requirement(r) for r in requires("recommender") or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue  # an extra, or another platform's dependency
        name = _name(req.name)
        if name in pinned:
            continue
        pinned[name] = version(req.name)
        todo.extend(Requirement(r) for r in requires(req.name) or [])
    return dict(sorted(pinned.items()))


def render() -> str:
    python = ".".join(platform.python_version_tuple()[:2])
    lines = [
        "# Runtime dependencies of recommender, pinned: the closure of pyproject.toml's",
        f"# [project].dependencies as installed in the development venv (Python {python}, "
        f"{platform.system()} {platform.machine()}).",
        "# Regenerate with `python scripts/lock_runtime_deps.py` after changing dependencies;",
        "# deploy/Dockerfile installs exactly these versions.",
    ]
    lines += [f"{name}=={ver}" for name, ver in closure().items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        current = LOCK.read_text(encoding="utf-8") if LOCK.exists() else ""
        if current != text:
            print(f"{LOCK} is out of date; run scripts/lock_runtime_deps.py", file=sys.stderr)
            return 1
        return 0
    LOCK.write_text(text, encoding="utf-8")
    print(f"wrote {LOCK}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
