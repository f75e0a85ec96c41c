"""Generate docs/api.md, the library API reference, from ``recommender.__all__`` and docstrings.

Usage::

    python scripts/gen_api_docs.py > docs/api.md
    python scripts/gen_api_docs.py --output docs/api.md

Every public name (``recommender.__all__``) gets a section with its signature and its NumPy-style
docstring turned into Markdown; classes also list their public methods and properties, and
constants the ``#:`` comment above their assignment. Names are grouped by the module that
defines them, in pipeline order, under that module's docstring. The output is deterministic, so
tests/test_api_docs.py can check that docs/api.md is up to date: a new public name only needs
this script re-run.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import recommender

REGENERATE = "python scripts/gen_api_docs.py --output docs/api.md"

#: Modules in the order a reader meets them (flows in, policies out, checks); a module not listed
#: here (a later addition) follows them in alphabetical order, before :data:`LAST`.
MODULE_ORDER = (
    "recommender.pipeline",
    "recommender.config",
    "recommender.ingest",
    "recommender.ingest.ledger",
    "recommender.ingest.schema",
    "recommender.ingest.profile",
    "recommender.aggregate.addresses",
    "recommender.aggregate.edges",
    "recommender.synthesis.synthesizer",
    "recommender.policy",
    "recommender.policy.reader",
    "recommender.evaluation.evaluator",
    "recommender.evaluation.replay",
    "recommender.analysis.graph",
    "recommender.report.graph_io",
    "recommender.analysis.segments",
)
#: The error classes and the package's own names (the version) close the reference.
LAST = ("recommender.errors", "recommender")

#: numpydoc sections whose entries are ``name : type`` lines with an indented description.
_ENTRY_SECTIONS = {
    "Parameters",
    "Other Parameters",
    "Attributes",
    "Returns",
    "Yields",
    "Receives",
    "Raises",
    "Warns",
}

_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj|const|ref):`~?([^`]+)`")


def module_of(name: str) -> str:
    """The public module a name of ``recommender.__all__`` comes from."""
    lazy: dict[str, str] = getattr(recommender, "_LAZY", {})
    if name in lazy:
        return f"recommender.{lazy[name]}"
    obj = getattr(recommender, name)
    module = getattr(obj, "__module__", None) if callable(obj) else None
    if not module:
        return "recommender"
    parts = module.split(".")
    while len(parts) > 1 and parts[-1].startswith("_"):
        parts.pop()  # recommender.ingest._detect -> recommender.ingest
    return ".".join(parts)


def grouped() -> list[tuple[str, list[str]]]:
    """``(module, names)`` in reading order; names keep the order of ``__all__``."""
    groups: dict[str, list[str]] = {}
    for name in recommender.__all__:
        groups.setdefault(module_of(name), []).append(name)
    first = {m: i for i, m in enumerate(MODULE_ORDER)}
    last = {m: i for i, m in enumerate(LAST)}

    def key(module: str) -> tuple[int, int, str]:
        if module in first:
            return (0, first[module], module)
        if module in last:
            return (2, last[module], module)
        return (1, 0, module)

    return sorted(groups.items(), key=lambda kv: key(kv[0]))


# --------------------------------------------------------------------------- docstrings


def inline(text: str) -> str:
    """reStructuredText inline markup as Markdown: roles and double backticks."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        shown = target.rsplit(".", 1)[-1] if match.group(0).count("~") else target
        return f"`{shown}`"

    text = _ROLE.sub(role, text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _is_underline(line: str, title: str) -> bool:
    return bool(title.strip()) and re.fullmatch(r"-{3,}", line.strip()) is not None


def _flush_code(out: list[str], code: list[str], lang: str) -> None:
    if code:
        while code and not code[-1].strip():
            code.pop()
        out += ["", f"```{lang}", *code, "```", ""]
        code.clear()


def docstring_markdown(doc: str | None) -> str:
    """A NumPy-style docstring as Markdown.

    Section titles become bold lines; Parameters/Returns/Raises/... entries become bullet
    lists; doctest examples and ``::`` literal blocks become fenced code.
    """
    if not doc:
        return ""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    code: list[str] = []
    section = ""
    literal = False  # inside an indented ``::`` block
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and _is_underline(lines[i + 1], line):
            _flush_code(out, code, "text" if literal else "pycon")
            literal = False
            section = line.strip()
            out += ["", f"**{section}**", ""]
            i += 2
            continue
        stripped = line.strip()
        if literal:
            if stripped and not line.startswith(" "):
                _flush_code(out, code, "text")
                literal = False
                continue
            code.append(line[4:] if line.startswith("    ") else line.lstrip())
            i += 1
            continue
        if stripped.startswith((">>>", "...")) and (stripped[:3] in (">>>", "...")):
            code.append(re.sub(r"\s*#\s*doctest:.*$", "", stripped))
            i += 1
            continue
        if code and stripped and section == "Examples":
            code.append(stripped)  # expected output of the example above
            i += 1
            continue
        _flush_code(out, code, "pycon")
        if stripped.endswith("::"):
            text = stripped[:-2].rstrip()
            out += ["", inline(text + ":")] if text else [""]
            literal = True
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            continue
        if section in _ENTRY_SECTIONS and stripped and not line.startswith(" "):
            name, sep, kind = stripped.partition(" : ")
            if section in ("Returns", "Yields", "Raises", "Warns") and not sep:
                out.append(f"- *{inline(name)}*")
            else:
                names = ", ".join(f"`{n.strip()}`" for n in name.split(","))
                out.append(f"- {names}" + (f" (*{inline(kind)}*)" if sep else ""))
            description = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                if i + 1 < len(lines) and _is_underline(lines[i + 1], lines[i]):
                    break
                description.append(lines[i].strip())
                i += 1
            while description and not description[-1]:
                description.pop()
            if description:
                out[-1] += ": " + inline(description[0])
                out += [f"  {inline(d)}" if d else "" for d in description[1:]]
            continue
        out.append(inline(line))
        i += 1
    _flush_code(out, code, "text" if literal else "pycon")
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# --------------------------------------------------------------------------- objects


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, str):  # postponed (``from __future__ import annotations``)
        return annotation
    return inspect.formatannotation(annotation)


def format_signature(name: str, sig: inspect.Signature, width: int = 88) -> str:
    """``name(params) -> return`` with annotations as written (no quotes), one parameter per
    line when it does not fit in ``width`` characters."""
    params = []
    star_done = False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star_done:
            params.append("*")
            star_done = True
        if p.kind is p.VAR_POSITIONAL:
            star_done = True
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        text = prefix + p.name
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            text += (" = " if p.annotation is not p.empty else "=") + repr(p.default)
        params.append(text)
        if p.kind is p.POSITIONAL_ONLY and (
            list(sig.parameters.values()).index(p) == len(sig.parameters) - 1
            or list(sig.parameters.values())[list(sig.parameters.values()).index(p) + 1].kind
            is not p.POSITIONAL_ONLY
        ):
            params.append("/")
    returns = ""
    if sig.return_annotation is not sig.empty and _annotation(sig.return_annotation) != "None":
        returns = f" -> {_annotation(sig.return_annotation)}"
    one_line = f"{name}({', '.join(params)}){returns}"
    if len(one_line) <= width:
        return one_line
    body = "".join(f"    {p},\n" for p in params)
    return f"{name}(\n{body}){returns}"


def _signature(obj: Any, name: str) -> str | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return None
    return format_signature(name, sig)


def _constant_comment(module: str, name: str) -> str:
    """The ``#:`` comment lines above ``name = ...`` in ``module``'s source."""
    try:
        source = inspect.getsource(importlib.import_module(module))
    except (OSError, TypeError):  # pragma: no cover - no source available
        return ""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"{re.escape(name)}\s*(:[^=]*)?=", line):
            comment = []
            j = i - 1
            while j >= 0 and lines[j].lstrip().startswith("#:"):
                comment.insert(0, lines[j].lstrip()[2:].strip())
                j -= 1
            return " ".join(comment)
    return ""


def _constant(name: str, value: Any, module: str) -> list[str]:
    lines = []
    comment = _constant_comment(module, name) or _constant_comment("recommender", name)
    if comment:
        lines += [inline(comment), ""]
    shown = repr(value)
    if len(shown) <= 100 and " at 0x" not in shown:
        lines += ["```python", f"{name} = {shown}", "```"]
    else:
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        size = f" with {len(value)} entries" if hasattr(value, "__len__") else ""
        lines.append(f"A `{kind}`{size}.")
    return lines


def _members(cls: type) -> list[tuple[str, Any]]:
    """Public methods, class methods and properties the class itself defines, in source order."""
    fields = set(getattr(cls, "__dataclass_fields__", {}))
    out = []
    for attr, raw in vars(cls).items():
        if attr.startswith("_") or attr in fields:
            continue
        if isinstance(raw, (property, classmethod, staticmethod)) or inspect.isfunction(raw):
            out.append((attr, raw))
    return out


def _member(cls: type, attr: str, raw: Any) -> list[str]:
    title = f"{cls.__name__}.{attr}"
    if isinstance(raw, property):
        heading, doc = f"#### `{title}` (property)", raw.__doc__
    else:
        func = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
        sig = inspect.signature(func)
        if not isinstance(raw, staticmethod):
            params = list(sig.parameters.values())[1:]  # self / cls
            sig = sig.replace(parameters=params)
        prefix = "classmethod " if isinstance(raw, classmethod) else ""
        heading = f"#### `{prefix}{format_signature(title, sig, width=10_000)}`"
        doc = func.__doc__
    text = docstring_markdown(doc)
    return [heading, "", *([text, ""] if text else [])]


def _anchor(name: str) -> str:
    """GitHub's anchor for a ``### `name` `` heading."""
    return re.sub(r"[^a-z0-9_\- ]", "", name.lower()).replace(" ", "-")


def _entry(name: str, module: str) -> list[str]:
    obj = getattr(recommender, name)
    lines = [f"### `{name}`", ""]
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            bases = ", ".join(b.__name__ for b in obj.__bases__)
            lines += ["```python", f"class {name}({bases})", "```", ""]
        else:
            sig = _signature(obj, name)
            lines += ["```python", f"class {sig or name}", "```", ""]
        text = docstring_markdown(inspect.getdoc(obj))
        lines += [text, ""] if text else []
        for attr, raw in _members(obj):
            lines += _member(obj, attr, raw)
    elif callable(obj):
        sig = _signature(obj, name)
        lines += ["```python", sig or name, "```", ""]
        text = docstring_markdown(inspect.getdoc(obj))
        lines += [text, ""] if text else []
    else:
        lines += [*_constant(name, obj, module), ""]
    return lines


def undocumented() -> list[str]:
    """Public functions and classes without a docstring of their own."""
    missing = []
    for name in recommender.__all__:
        obj = getattr(recommender, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
            missing.append(name)
    return missing


def render() -> str:
    """The whole of docs/api.md."""
    groups = grouped()
    lines = [
        "# Library API reference",
        "",
        "<!-- Generated by scripts/gen_api_docs.py from recommender.__all__ and the docstrings;",
        f"     do not edit. Regenerate with: {REGENERATE} -->",
        "",
        "Everything below is importable from the package itself (`from recommender import "
        "recommend`); these names are the public API (`recommender.__all__`). Modules not "
        "re-exported here are internals that may change. The notebooks in "
        "[`notebooks/`](../notebooks/) use this API end to end; "
        "[quickstart.md](quickstart.md) has a short Python session.",
        "",
        "```python",
        "from recommender import read_flows, recommend, replay",
        'flows = read_flows("sample_flows/flows.parquet")      # any supported format',
        "rec = recommend(flows)                                # policies + report",
        "print(rec.to_yaml())",
        "print(replay(rec.policy_set, flows).coverage)         # 1.0",
        "```",
        "",
        "Contents:",
        "",
    ]
    for module, names in groups:
        links = ", ".join(f"[`{n}`](#{_anchor(n)})" for n in names)
        lines.append(f"- `{module}`: {links}")
    lines.append("")
    for module, names in groups:
        lines += [f"## `{module}`", ""]
        if module != "recommender":  # the package docstring only points here
            text = docstring_markdown(inspect.getdoc(importlib.import_module(module)))
            lines += [text, ""] if text else []
        for name in names:
            lines += _entry(name, module)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
