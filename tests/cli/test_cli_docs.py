"""docs/cli.md is generated from the Typer app and must stay in step with it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_cli_docs.py"
CLI_DOC = ROOT / "docs" / "cli.md"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_doc_is_up_to_date(gen):
    expected = gen.render()
    actual = CLI_DOC.read_text(encoding="utf-8") if CLI_DOC.exists() else ""
    assert actual == expected, (
        "docs/cli.md is out of date with recommender.cli.app; regenerate it with "
        f"`{gen.REGENERATE}` and commit the result."
    )


def test_cli_doc_says_run_is_the_default(gen):
    head = gen.render().split("## ", 1)[0]
    assert "`recommend FLOWS...` is short for `recommend run FLOWS...`" in head


def test_every_command_has_help(gen):
    commands = gen.iter_commands()
    assert {name for name, _, _ in commands} >= {"ingest", "run", "evaluate", "diff"}
    root = gen.root_command()
    assert (root.help or "").strip(), "the root command has no help text"
    missing = [name for name, command, _ in commands if not (command.help or "").strip()]
    assert not missing, f"commands without help text: {missing}"


def test_every_option_and_argument_has_help(gen):
    root = gen.root_command()
    ctx = gen._context(root, gen.PROG)
    entries = [("recommend", root, ctx), *gen.iter_commands()]
    missing = [
        f"{name} {param.name}"
        for name, command, context in entries
        for param in gen.visible_params(command, context)
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert not missing, f"parameters without help text: {missing}"
