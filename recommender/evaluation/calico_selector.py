"""Calico's selector language, parsed and evaluated as Calico does.

The grammar and its semantics are those of ``libcalico-go/lib/selector`` (tokenizer, parser,
ast), ported to a `Lark <https://lark-parser.readthedocs.io>`_ grammar:

* ``||`` binds loosest, then ``&&``; ``!`` (any number, collapsed) negates the one operation or
  parenthesised expression after it, so ``!a == 'x' && b == 'y'`` is ``(!(a == 'x')) && ...``;
* operations: ``k == 'v'``, ``k != 'v'`` (true when ``k`` is absent), ``k in {'a', 'b'}``,
  ``k not in {...}`` (true when absent; ``notin`` too), ``k contains 'v'``,
  ``k starts with 'v'``, ``k ends with 'v'`` (``startswith``/``endswith`` too; all three false
  when absent), ``has(k)``, ``all()``, ``global()`` (both true on any labels), ``( ... )``;
  the empty selector is ``all()``;
* a label is made of ``[A-Za-z0-9_./-]`` (at most 512 of them); a string is quoted with ``'`` or
  ``"`` and has no escapes (the other quote may appear inside); only spaces and tabs separate
  tokens; a set may end with a comma.

:class:`Selector` is an immutable tree; :meth:`Selector.evaluate` matches a label map, ``str()``
is Calico's canonical form (``Selector.String()``), which parses back to an equal tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from lark import Lark, Token, Transformer
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedToken, VisitError

__all__ = [
    "All",
    "And",
    "Global",
    "Has",
    "LabelOp",
    "Not",
    "Or",
    "Selector",
    "SelectorError",
    "parse_selector",
]

MAX_LABEL_LENGTH: Final = 512
_IDENT: Final = r"[A-Za-z0-9_.\/-]"

_GRAMMAR: Final = rf"""
?start: or_expr
      |                                -> empty
?or_expr: and_expr (OR and_expr)*      -> or_
?and_expr: operation (AND operation)*  -> and_
operation: BANG* atom
?atom: HAS                             -> has
     | ALL                             -> all_
     | GLOBAL                          -> global_
     | LABEL OP STRING                 -> compare
     | LABEL SETOP "{{" [STRING ("," STRING)* ","?] "}}" -> in_set
     | "(" or_expr ")"

OR: "||"
AND: "&&"
BANG: /!(?!=)/
HAS.3: /has\([ \t]*{_IDENT}+[ \t]*\)/
ALL.3: /all\([ \t]*\)/
GLOBAL.3: /global\([ \t]*\)/
OP.2: "==" | "!=" | /contains(?!{_IDENT})/ | /starts[ \t]*with(?!{_IDENT})/
    | /ends[ \t]*with(?!{_IDENT})/
SETOP.2: /not[ \t]*in(?!{_IDENT})/ | /in(?!{_IDENT})/
LABEL: /{_IDENT}+/
STRING: /"[^"]*"/ | /'[^']*'/
%ignore /[ \t]+/
"""


class SelectorError(ValueError):
    """A selector that Calico would reject."""


class Selector:
    """A node of a parsed selector."""

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` match."""
        raise NotImplementedError

    def keys(self) -> Iterator[str]:
        """The label names the selector reads."""
        return iter(())

    def prefixed(self, prefix: str) -> Selector:
        """The selector with ``prefix`` before every label name (Calico's ``PrefixVisitor``)."""
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Same as :meth:`evaluate` (the name :class:`LabelSelector` uses)."""
        return self.evaluate(labels)


def _quote(value: str) -> str:
    quote = "'" if '"' in value else '"'
    return f"{quote}{value}{quote}"


@dataclass(frozen=True)
class All(Selector):
    """``all()`` (and the empty selector): every label map."""

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "all()"


@dataclass(frozen=True)
class Global(Selector):
    """``global()``: evaluates like ``all()``; in a ``namespaceSelector`` it means "outside
    every namespace" (the caller rewrites it)."""

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "global()"


@dataclass(frozen=True)
class Has(Selector):
    """``has(key)``."""

    key: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels

    def keys(self) -> Iterator[str]:
        yield self.key

    def prefixed(self, prefix: str) -> Selector:
        return Has(prefix + self.key)

    def __str__(self) -> str:
        return f"has({self.key})"


@dataclass(frozen=True)
class LabelOp(Selector):
    """``key OP value`` or ``key (not) in {values}``; ``op`` is ``==``, ``!=``, ``contains``,
    ``starts with``, ``ends with``, ``in`` or ``not in``."""

    key: str
    op: str
    value: str = ""
    values: frozenset[str] = frozenset()

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        found = labels.get(self.key)
        op = self.op
        if found is None:
            return op in ("!=", "not in")
        if op == "==":
            return found == self.value
        if op == "!=":
            return found != self.value
        if op == "in":
            return found in self.values
        if op == "not in":
            return found not in self.values
        if op == "contains":
            return self.value in found
        if op == "starts with":
            return found.startswith(self.value)
        return found.endswith(self.value)

    def keys(self) -> Iterator[str]:
        yield self.key

    def prefixed(self, prefix: str) -> Selector:
        return LabelOp(prefix + self.key, self.op, self.value, self.values)

    def __str__(self) -> str:
        if self.op in ("in", "not in"):
            return f"{self.key} {self.op} {{{', '.join(_quote(v) for v in sorted(self.values))}}}"
        return f"{self.key} {self.op} {_quote(self.value)}"


@dataclass(frozen=True)
class Not(Selector):
    """``!operand``."""

    operand: Selector

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.evaluate(labels)

    def keys(self) -> Iterator[str]:
        return self.operand.keys()

    def prefixed(self, prefix: str) -> Selector:
        return Not(self.operand.prefixed(prefix))

    def __str__(self) -> str:
        return f"!{self.operand}"


@dataclass(frozen=True)
class And(Selector):
    """``a && b && ...``."""

    operands: tuple[Selector, ...]

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return all(o.evaluate(labels) for o in self.operands)

    def keys(self) -> Iterator[str]:
        for operand in self.operands:
            yield from operand.keys()

    def prefixed(self, prefix: str) -> Selector:
        return And(tuple(o.prefixed(prefix) for o in self.operands))

    def __str__(self) -> str:
        return "(" + " && ".join(str(o) for o in self.operands) + ")"


@dataclass(frozen=True)
class Or(Selector):
    """``a || b || ...``."""

    operands: tuple[Selector, ...]

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return any(o.evaluate(labels) for o in self.operands)

    def keys(self) -> Iterator[str]:
        for operand in self.operands:
            yield from operand.keys()

    def prefixed(self, prefix: str) -> Selector:
        return Or(tuple(o.prefixed(prefix) for o in self.operands))

    def __str__(self) -> str:
        return "(" + " || ".join(str(o) for o in self.operands) + ")"


def _label(token: Token) -> str:
    text = str(token)
    if len(text) > MAX_LABEL_LENGTH:
        raise SelectorError(f"label too long: {text[:40]}...")
    return text


class _Build(Transformer[Token, Selector]):
    def empty(self, _: list[object]) -> Selector:
        return All()

    def or_(self, items: list[object]) -> Selector:
        operands = tuple(i for i in items if isinstance(i, Selector))
        return operands[0] if len(operands) == 1 else Or(operands)

    def and_(self, items: list[object]) -> Selector:
        operands = tuple(i for i in items if isinstance(i, Selector))
        return operands[0] if len(operands) == 1 else And(operands)

    def operation(self, items: list[object]) -> Selector:
        *bangs, atom = items
        assert isinstance(atom, Selector)
        return Not(atom) if len(bangs) % 2 else atom

    def has(self, items: list[Token]) -> Selector:
        inner = str(items[0])[len("has("):-1].strip(" \t")
        return Has(_label(Token("LABEL", inner)))

    def all_(self, _: list[Token]) -> Selector:
        return All()

    def global_(self, _: list[Token]) -> Selector:
        return Global()

    def compare(self, items: list[Token]) -> Selector:
        label, op, value = items
        name = " ".join(str(op).replace("with", " with").split())
        return LabelOp(_label(label), name, str(value)[1:-1])

    def in_set(self, items: list[Token | None]) -> Selector:
        label, op, *values = items
        assert label is not None and op is not None
        name = "not in" if str(op).startswith("not") else "in"
        return LabelOp(
            _label(label), name, values=frozenset(str(v)[1:-1] for v in values if v is not None)
        )


_PARSER: Final = Lark(_GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=True)


@lru_cache(maxsize=4096)
def parse_selector(text: str) -> Selector:
    """Parse a Calico selector.

    Raises
    ------
    SelectorError
        If Calico would reject it (the message says where).

    Examples
    --------
    >>> str(parse_selector("! (has( b)||! has(a ))"))
    '!(has(b) || !has(a))'
    >>> parse_selector("app == 'web' || tier in {'db', 'cache'}").evaluate({"tier": "db"})
    True
    """
    try:
        tree = _PARSER.parse(text)
        result = _Build().transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, SelectorError):
            raise exc.orig_exc from None
        raise SelectorError(str(exc.orig_exc)) from None
    except UnexpectedToken as exc:
        if exc.token.type == "$END":
            raise SelectorError("the selector ends too early") from None
        raise SelectorError(f"unexpected {str(exc.token)!r} at column {exc.column}") from None
    except UnexpectedCharacters as exc:
        where = exc.pos_in_stream or 0
        raise SelectorError(
            f"unexpected character {text[where:where + 1]!r} at column {exc.column}"
        ) from None
    except LarkError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SelectorError(first) from None
    assert isinstance(result, Selector)
    return result
