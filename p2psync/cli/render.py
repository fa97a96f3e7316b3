"""Output for people (rich tables) and for scripts (``--json``); errors are one line on stderr."""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from p2psync.books.money import format_indian, from_decimal
from p2psync.canonical import report_json

#: Wide enough for a day book when output goes to a file or a pipe rather than a terminal.
_PIPE_WIDTH = 140
out = Console(highlight=False, width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_WRAPPING = {"Narration", "Particulars", "Ledger", "Name", "Group"}


def print_json(data: Any) -> None:
    sys.stdout.write(report_json(data, indent=2) + "\n")


def money(value: Decimal | None, blank_zero: bool = True) -> str:
    if value is None or (blank_zero and value == 0):
        return ""
    return format_indian(from_decimal(value))


def table(title: str, columns: list[str], rows: list[list[Any]], *, numeric: set[int] = frozenset(),  # type: ignore[assignment]
          footer: list[Any] | None = None) -> None:
    grid = Table(title=title, title_justify="left", show_footer=footer is not None)
    for i, column in enumerate(columns):
        grid.add_column(column, justify="right" if i in numeric else "left", no_wrap=column not in _WRAPPING,
                        footer=str(footer[i]) if footer is not None and footer[i] is not None else "")
    for row in rows:
        grid.add_row(*["" if cell is None else str(cell) for cell in row])
    out.print(grid)


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)


def info(message: str) -> None:
    """A message as one line however long (paths, commands to copy): the terminal wraps it for show,
    and a script or a copy and paste gets it whole."""
    out.print(message, markup=False, soft_wrap=True)
