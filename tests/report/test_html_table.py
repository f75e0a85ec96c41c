"""report.html's tables (recommender.report.html._table) take fast paths for the common cells
(text, numbers, lists of text, markup); these tests compare them with the plain rendering, cell
by cell through ``_cell``, on every kind of value a report holds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.report import html
from recommender.report.html import _cell, _Html, _table, _text, _time


def _plain_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None
) -> str:
    """The table as it was written before the fast paths: every cell through ``_cell``."""
    out = ['<div class="scroll"><table>']
    if caption:
        out.append(f"<caption>{_text(caption)}</caption>")
    out.append("<thead><tr>")
    out += [f'<th scope="col">{_text(h)}</th>' for h in headers]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for value in row:
            if isinstance(value, _Html):
                out.append(f"<td>{value.markup}</td>")
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out.append(f'<td class="num">{_text(value)}</td>')
            else:
                out.append(f"<td>{_cell(value)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


class _Text(str):
    """A str subclass: never taken for plain text by the fast paths."""


_texts = st.text(max_size=8) | st.sampled_from(["a<b", "x&y", '"q"', "\x01\x7f", "ns/web"])
_scalars = (
    _texts
    | st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True)
    | _texts.map(_Text)
    | st.sampled_from(
        ["2024-05-01T10:00:00+00:00", "2024-05-01T10:00:00.123456Z", "2024-05-01 10:00"]
    ).map(_time)
    | _texts.map(lambda t: _Html(f"<b>{t}</b>"))
)
_values = (
    _scalars
    | st.lists(_texts, max_size=4)
    | st.lists(_scalars, max_size=3)
    | st.tuples(_texts, _texts)
    | st.sets(_texts, max_size=3)
    | st.dictionaries(_texts, _texts | st.integers(), max_size=3)
)


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(st.lists(_values, min_size=1, max_size=6), max_size=6),
    caption=st.none() | _texts,
)
def test_table_is_the_plain_rendering(rows: list[list[Any]], caption: str | None) -> None:
    headers = [f"h{i}" for i in range(6)]
    assert _table(headers, rows, caption) == _plain_table(headers, rows, caption)


@settings(max_examples=200, deadline=None)
@given(
    when=st.datetimes(timezones=st.none()),
    zulu=st.booleans(),
    digits=st.sampled_from(["0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667"]),
)
def test_time_markup_needs_no_escaping(when: Any, zulu: bool, digits: str) -> None:
    # _time writes a matched time as it is: its characters are never escaped.
    text = when.isoformat() + ("Z" if zulu else "+00:00")
    text = text.translate(str.maketrans("0123456789"[: len(digits)], digits))
    got = _time(text)
    if isinstance(got, _Html):
        assert f'datetime="{html._text(text)}"' in got.markup
