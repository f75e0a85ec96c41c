"""``recommend review`` end to end: the command serves the page, Chromium (driven by
Playwright through ``executable_path``) rejects a rule, the decisions file holds the entry, a
re-run from the page removes the rule from the report and the policies, and the screenshots
are legible (no text under 12 px, nothing wider than the window)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import browser, needs_browser, screenshot  # noqa: F401

from recommender import recommend
from recommender.synthesis.decisions import Decision, load_decisions

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"

#: Visible text smaller than 12 px, and how far the page is wider than the window.
_LEGIBILITY = """() => {
  const small = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const r = el.getBoundingClientRect();
    if (!own || r.width === 0 || r.height === 0) continue;
    const size = parseFloat(getComputedStyle(el).fontSize);
    if (size < 12) small.push(el.tagName + ' ' + size + ' ' + el.textContent.slice(0, 40));
  }
  return {small, overflow: document.documentElement.scrollWidth - window.innerWidth};
}"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    out = tmp_path / "out"
    recommend(SAMPLE).write(out)
    decisions = tmp_path / "decisions.yaml"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    log = tmp_path / "review.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recommender", "review", str(out), "--flows", str(SAMPLE),
             "--decisions", str(decisions)],
            stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "PYTHONPATH": path},
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(f"Review {out} at http://127.0.0.1:"), line + log.read_text()
            yield line.split(" at ", 1)[1].strip(), out, decisions
        finally:
            proc.terminate()
            proc.communicate(timeout=30)


def _rules(out: Path) -> list[tuple[Any, ...]]:
    report = json.loads((out / "report.json").read_text())
    return [(r["namespace"], r["workload"], r["direction"], tuple(r["peers"]), tuple(r["ports"]))
            for r in report["rules"]]  # fmt: skip


def _legible(page: Any) -> None:
    found = page.evaluate(_LEGIBILITY)
    assert found["small"] == [], found["small"][:5]
    assert found["overflow"] <= 0


@needs_browser
def test_reject_a_rule_in_the_page_then_rerun(
    served: tuple[str, Path, Path], browser: Any, tmp_path: Path  # noqa: F811
) -> None:
    url, out, decisions = served
    base = url.split("/?", 1)[0]
    for bad in (base + "/", base + "/?token=nope", base + "/graph"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)
        assert refused.value.code == 403
    rule = ("shop", "cart", "egress", ("app.kubernetes.io/name=catalog",), ("TCP/9000",))
    mirror = ("shop", "catalog", "ingress", ("app=cart",), ("TCP/9000",))
    assert rule in _rules(out) and mirror in _rules(out)

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    assert page.locator("#verdict").inner_text() == "review first"
    screenshot(page, "review-top.png", tmp_path)
    _legible(page)

    row = page.locator("tr[data-rule]").filter(has_text="app.kubernetes.io/name=catalog").filter(
        has_text="TCP/9000")  # fmt: skip
    assert row.count() == 1
    assert "rare" in row.inner_text()  # the flag and its meaning are shown
    row.get_by_role("button", name="reject").click()
    page.wait_for_load_state()
    # the rule and its mirror (catalog's ingress from cart) stand for the same edge
    rejected = page.locator("tr.rejected[data-rule]")
    assert rejected.count() == 2
    assert all("TCP/9000" in rejected.nth(i).inner_text() for i in range(2))
    assert load_decisions(decisions).entries == (
        Decision("reject", from_="shop/cart", to="shop/catalog", port=9000, protocol="TCP"),
    )
    rejected.first.scroll_into_view_if_needed()
    screenshot(page, "review-rejected.png", tmp_path)

    page.locator("#rerun").click()
    page.wait_for_selector("#changes", timeout=120_000)
    changes = page.locator("#changes-table").inner_text()
    assert "removed" in changes and "shop/cart" in changes and "TCP/9000" in changes
    assert "1 applied" in page.locator("main").inner_text()
    assert page.locator("#decisions-table").inner_text().count("applied") == 1
    screenshot(page, "review-changes.png", tmp_path)
    _legible(page)
    # the rule and its mirror are gone from the report and the policies; nothing else changed
    after = _rules(out)
    assert rule not in after and mirror not in after
    cart = (out / "shop" / "allow-cart.yaml").read_text()
    assert "9000" not in cart and "6379" in cart
    assert not errors, errors

    page.goto(url.replace("/?", "/graph?"))
    page.wait_for_selector("[data-graph][data-ready='1']", timeout=60_000)
    screenshot(page, "review-graph.png", tmp_path)
    assert not errors, errors
    page.close()
