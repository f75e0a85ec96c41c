"""Playwright driving Debian's Chromium (``executable_path``): Playwright's own browser
download is not used. Tests using :func:`browser` skip cleanly, with the reason, when the
``playwright`` package or a ``chromium`` binary is missing (``.ci/run`` installs both)."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return "chromium is not installed (apt-get install chromium)"
    return None


needs_browser = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def overlaps(boxes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of boxes (``id``, ``x1``, ``y1``, ``x2``, ``y2``) whose interiors intersect."""
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a["x1"] < b["x2"] and b["x1"] < a["x2"] and a["y1"] < b["y2"] and b["y1"] < a["y2"]:
                found.append((a["id"], b["id"]))
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Save a screenshot to look at: in ``$RECOMMENDER_SCREENSHOTS`` when set, else in the
    test's temporary folder."""
    import os

    folder = Path(os.environ.get("RECOMMENDER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path))
    return path
