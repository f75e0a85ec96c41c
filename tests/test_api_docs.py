"""docs/api.md is generated from ``recommender.__all__`` and the docstrings, and stays in step."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import recommender

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gen_api_docs.py"
API_DOC = ROOT / "docs" / "api.md"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_api_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered(gen) -> str:
    return str(gen.render())


def test_api_doc_is_up_to_date(gen, rendered: str) -> None:
    actual = API_DOC.read_text(encoding="utf-8") if API_DOC.exists() else ""
    assert actual == rendered, (
        "docs/api.md is out of date with recommender.__all__ or a docstring; regenerate it "
        f"with `{gen.REGENERATE}` and commit the result."
    )


def test_render_is_deterministic(gen, rendered: str) -> None:
    assert gen.render() == rendered
    assert " at 0x" not in rendered, "an object's repr with a memory address leaked into api.md"


def test_every_public_name_has_a_section(rendered: str) -> None:
    headings = set(re.findall(r"^### `([^`]+)`$", rendered, flags=re.M))
    assert headings == set(recommender.__all__)


def test_every_public_function_and_class_has_a_docstring(gen) -> None:
    assert gen.undocumented() == [], "public names without a docstring (NumPy style, please)"


def test_contents_links_reach_their_sections(gen, rendered: str) -> None:
    anchors = set(re.findall(r"\]\(#([^)]+)\)", rendered))
    headings = {gen._anchor(h) for h in re.findall(r"^### `([^`]+)`$", rendered, flags=re.M)}
    assert anchors and anchors <= headings


def test_every_module_section_names_a_public_module(gen) -> None:
    for module, names in gen.grouped():
        assert not any(part.startswith("_") for part in module.split("."))
        assert names


def test_numpy_docstring_to_markdown(gen) -> None:
    doc = '''Do a thing with :func:`~recommender.evaluation.replay.replay` and ``code``.

    Parameters
    ----------
    flows : pyarrow.Table
        The flows.
        Second line.
    a, b
        Two at once.

    Returns
    -------
    Coverage
        What it found.

    Tree::

        root
        └── leaf

    Examples
    --------
    >>> thing(1)  # doctest: +SKIP
    2
    '''
    assert gen.docstring_markdown(doc) == (
        "Do a thing with `replay` and `code`.\n"
        "\n"
        "**Parameters**\n"
        "\n"
        "- `flows` (*pyarrow.Table*): The flows.\n"
        "  Second line.\n"
        "- `a`, `b`: Two at once.\n"
        "\n"
        "**Returns**\n"
        "\n"
        "- *Coverage*: What it found.\n"
        "\n"
        "Tree:\n"
        "\n"
        "```text\n"
        "root\n"
        "└── leaf\n"
        "```\n"
        "\n"
        "**Examples**\n"
        "\n"
        "```pycon\n"
        ">>> thing(1)\n"
        "2\n"
        "```"
    )


def test_signatures_are_wrapped_without_quotes(gen) -> None:
    import inspect

    def f(a: int, b: str = "x", *, c: float | None = None) -> list[str]:
        return []

    sig = inspect.signature(f)
    one_line = "f(a: int, b: str = 'x', *, c: float | None = None) -> list[str]"
    assert gen.format_signature("f", sig) == one_line
    assert gen.format_signature("f", sig, width=20) == (
        "f(\n    a: int,\n    b: str = 'x',\n    *,\n    c: float | None = None,\n) -> list[str]"
    )
