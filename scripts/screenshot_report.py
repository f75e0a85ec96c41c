"""Take the README's picture of report.html: the bundled sample's report, in headless Chromium.

Usage::

    python scripts/screenshot_report.py                     # writes docs/img/report.png
    python scripts/screenshot_report.py --output FILE --width 1280 --height 1400

Runs ``recommend`` on ``sample_flows/flows.parquet`` through the library, writes the report to
a temporary folder and screenshots its first screens with Chromium (``apt-get install
chromium``; ``--chromium PATH`` for another binary). The page has no script and needs no
network. Chromium's rendering depends on the fonts installed, so the PNG is not compared in the
tests; re-run this script when the report's look changes, and commit the result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "img" / "report.png"
#: Relative to the repository root, as the page shows it.
SAMPLE = "sample_flows/flows.parquet"


def find_chromium(given: str | None) -> str:
    for candidate in (given, shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):  # fmt: skip
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("chromium not found: apt-get install chromium, or pass --chromium PATH")


def screenshot(page: Path, output: Path, chromium: str, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--force-device-scale-factor=1",
                f"--window-size={width},{height}",
                "--virtual-time-budget=2000",
                f"--screenshot={output}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    if result.returncode != 0 or not output.exists():
        raise SystemExit(f"chromium failed ({result.returncode}):\n{result.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", "-o", type=Path, default=OUTPUT)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1900)
    parser.add_argument("--chromium", help="the Chromium binary (default: found on PATH)")
    args = parser.parse_args(argv)
    chromium = find_chromium(args.chromium)

    from recommender import recommend

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recommendations"
        os.chdir(ROOT)  # the report names the input as given: a relative path
        recommend(SAMPLE).write(out)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        screenshot(out / "report.html", args.output, chromium, args.width, args.height)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
