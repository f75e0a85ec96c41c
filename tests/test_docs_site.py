"""The documentation holds together: links resolve, every page is in the index, the diagram is
current, and the README keeps its two commands."""

from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Markdown files whose links are checked.
PAGES = sorted(
    {
        *DOCS.rglob("*.md"),
        ROOT / "README.md",
        ROOT / "SECURITY.md",
        ROOT / "notebooks" / "README.md",
        ROOT / "sample_flows" / "README.md",
    }
    & {p for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
)

#: Pages or notebooks allowed to be missing from docs/index.md or notebooks/README.md: none
#: now that every issue's pages have landed. Links are never allowed to be broken.
LATE: frozenset[str] = frozenset()

_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def links(text: str) -> list[str]:
    """Link targets of Markdown text, outside code blocks and code spans."""
    text = _FENCE.sub("", text)
    text = _CODE.sub("", text)
    return _LINK.findall(text)


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors of a Markdown page (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in _FENCE.sub("", text).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))  # links: their text
        slug = re.sub(r"[^\w\- ]", "", title.lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def test_link_and_anchor_parsing() -> None:
    text = (
        "See [a](a.md), [b `x`](b.md#Part-one \"t\"), ![img](img/x.svg), [web](https://x.org).\n"
        "`[not](code.md)`\n```\n[not](fenced.md)\n```\n"
        "## The `recommend run` command\n## Will DNS keep working?\n## Again\n## Again\n"
    )
    assert links(text) == ["a.md", "b.md#Part-one", "img/x.svg", "https://x.org"]
    assert anchors(text) == {"the-recommend-run-command", "will-dns-keep-working", "again",
                             "again-1"}  # fmt: skip


def _broken_links(page: Path) -> list[str]:
    broken = []
    text = page.read_text(encoding="utf-8")
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
            continue
        if (
            fragment
            and dest.suffix == ".md"
            and fragment not in anchors(dest.read_text(encoding="utf-8"))
        ):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[_rel(p) for p in PAGES])
def test_every_link_resolves(page: Path) -> None:
    assert not _broken_links(page), f"{_rel(page)}: broken links {_broken_links(page)}"


def test_the_link_checker_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# Title\n", encoding="utf-8")
    page.write_text("[a](there.md#title) [b](there.md#nope) [c](missing.md)\n", encoding="utf-8")
    assert _broken_links(page) == ["there.md#nope (no such heading)", "missing.md (no such file)"]


def test_every_docs_page_is_in_the_index() -> None:
    index = DOCS / "index.md"
    linked = {(DOCS / t.partition("#")[0]).resolve() for t in links(index.read_text("utf-8"))}
    pages = {p.resolve() for p in DOCS.rglob("*.md")} - {index.resolve()}
    missing = sorted(_rel(p) for p in pages - linked if _rel(p) not in LATE)
    assert not missing, f"pages not linked from docs/index.md: {missing}"


def test_every_notebook_is_in_the_notebooks_readme() -> None:
    readme = ROOT / "notebooks" / "README.md"
    linked = set(links(readme.read_text(encoding="utf-8")))
    missing = [
        p.name
        for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
        if p.name not in linked and _rel(p) not in LATE
    ]
    assert not missing, f"notebooks not listed in notebooks/README.md: {missing}"


def test_readme_keeps_its_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (
        "python3 -m venv .venv && . .venv/bin/activate && pip install . && "
        "recommend sample_flows/flows.parquet -o recommendations"
    ) in text
    assert "pip install -e '.[test]' && python -m pytest -q" in text


# --------------------------------------------------------------------------- the diagram


@pytest.fixture(scope="module")
def draw():
    script = ROOT / "scripts" / "draw_architecture.py"
    spec = importlib.util.spec_from_file_location("draw_architecture", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_architecture_svg_is_current(draw) -> None:
    svg = draw.render()
    assert svg == draw.render()
    assert draw.OUTPUT.read_text(encoding="utf-8") == svg, (
        f"docs/img/architecture.svg is out of date; regenerate it with `{draw.REGENERATE}`."
    )
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    boxes = {g.get("id") for g in root.iter("{http://www.w3.org/2000/svg}g")}
    assert boxes == {node[0] for node in draw.NODES}
    assert {a for a, _, _ in draw.EDGES} | {b for _, b, _ in draw.EDGES} <= boxes


def test_mermaid_and_svg_name_the_same_steps(draw) -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```mermaid\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    missing = [title for title in draw.titles() if title not in blocks[0]]
    assert not missing, f"steps in the SVG but not in the Mermaid diagram: {missing}"
    assert "img/architecture.svg" in links(text)


def test_packages_svg_is_current_and_draws_the_checked_layers(draw) -> None:
    from test_layout import LAYERS

    svg = draw.render_packages()
    assert draw.PACKAGES_OUTPUT.read_text(encoding="utf-8") == svg, (
        f"docs/img/packages.svg is out of date; regenerate it with `{draw.REGENERATE}`."
    )
    assert tuple(tuple(name for name, _ in layer) for layer in draw.LAYERS) == LAYERS
    ET.fromstring(svg)
    assert "img/packages.svg" in links((DOCS / "architecture.md").read_text(encoding="utf-8"))
