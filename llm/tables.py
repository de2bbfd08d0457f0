"""Tables for people and for logs, with every value whole: a commit SHA or a path cut to "…" at 80 columns is worse
than a long line. On a terminal: a rich table whose columns fold a long value onto the next line. Anywhere else (a
file, a pipe, a CI log): plain text, a row a line, columns aligned, no width limit, no colour.

    print_table(["env", "version"], [("cpu", "1.0.0"), SECTION, ("cuda-mcore", "1.0.0")], title="envs")

A cell is a ``str`` (printed as it is, never read as rich markup) or a ``rich.text.Text`` (styled on a terminal)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

SECTION = None  # a row that separates sections


@dataclass(frozen=True)
class Column:
    header: str
    justify: Literal["left", "right"] = "left"


def print_table(
    columns: Sequence[str | Column],
    rows: Iterable[Sequence[str | Text] | None],
    *,
    title: str | None = None,
    console: Console | None = None,
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    rows = list(rows)
    if not console.is_terminal:
        for line in plain_lines(cols, rows, title):
            console.out(line, highlight=False)
        return
    table = Table(title=title)
    for col in cols:
        table.add_column(col.header, justify=col.justify, overflow="fold")
    for row in rows:
        if row is SECTION:
            table.add_section()
        else:
            table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in row))
    console.print(table)


def plain_lines(columns: Sequence[Column], rows: Sequence[Sequence[str | Text] | None], title: str | None) -> list[str]:
    """The table as aligned plain-text lines: the title, the headers, then each row (a section: a line of dashes)."""
    texts = [None if row is SECTION else [c if isinstance(c, str) else c.plain for c in row] for row in rows]
    header = [c.header for c in columns]
    widths = [max(len(cell) for cell in cells) for cells in zip(header, *(t for t in texts if t is not None))]

    def line(cells: list[str]) -> str:
        aligned = [
            cell.rjust(width) if col.justify == "right" else cell.ljust(width)
            for col, cell, width in zip(columns, cells, widths)
        ]
        return "  ".join(aligned).rstrip()

    out = [title] if title else []
    out.append(line(header))
    rule = "-" * len(out[-1])
    out += [rule if cells is None else line(cells) for cells in texts]
    return out
