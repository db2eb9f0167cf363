"""The one table helper and number formatter of bloomforge's pages and cards.

In: a header and rows of plain values (str, int, float, None). Out: an HTML `<table>` (escaped),
a markdown table, a `<details>` block, and `fmt` for a single value: integers with thousands
separators, floats with two decimals (or three significant digits below 0.01), None as empty.
`decimals` writes a metric with a fixed number of decimals, `pct` a fraction as a percentage,
`when` a Unix time as a UTC date. Used by `data report`, `data inspect`, the run report and cards
(`bloomforge.pipeline`), `eval`'s table and `ablate`'s report, so the same number reads the same
everywhere.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any


def fmt(value: Any) -> str:
    """One value as shown in a table: 1,234 / 12.35 / 0.00123 / '' for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.3g}"
        return f"{value:,.2f}"
    return str(value)


def decimals(value: Any, digits: int = 4, missing: str = "", sci_from: float = math.inf) -> str:
    """A metric with `digits` decimals (0.1235), in scientific notation from `sci_from` up
    (1.2346e+06); `missing` for None, NaN or anything that is not a number."""
    if not isinstance(value, int | float) or math.isnan(value):
        return missing
    return f"{value:.{digits}f}" if abs(value) < sci_from else f"{value:.{digits}e}"


def pct(fraction: float) -> str:
    """A fraction as a percentage with one decimal: 0.1234 -> 12.3%."""
    return f"{100 * fraction:.1f}%"


def when(seconds: float | None) -> str:
    """A Unix time as `2026-12-02 07:03:06 UTC` ('' when unknown)."""
    if seconds is None:
        return ""
    stamp = dt.datetime.fromtimestamp(float(seconds), tz=dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def html_table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    """An HTML table; every cell escaped and formatted with `fmt`."""
    attr = f' class="{html.escape(cls)}"' if cls else ""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table{attr}><tr>{head}</tr>{body}</table>"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown (GitHub) table; cells formatted with `fmt`, pipes escaped."""

    def cell(value: Any) -> str:
        return fmt(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def details(summary: str, inner_html: str, open_: bool = False) -> str:
    """A collapsed block (`<details>`) whose summary line is escaped text."""
    flag = " open" if open_ else ""
    return f"<details{flag}><summary>{html.escape(summary)}</summary>{inner_html}</details>"
