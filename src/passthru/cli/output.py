"""How client commands answer: Rich tables and key/value panels for people, JSON for
scripts, and one line on stderr (no traceback) when something fails, exiting with the
error's code (`passthru.errors`: 2 bad input, 3 not found, 4 conflict, 5 no capacity …)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from passthru.cli.app import commands, panel_of
from passthru.errors import PassthruError

P = ParamSpec("P")
R = TypeVar("R")

# Values print as they are, with no emoji codes read in them (a name may hold `:x:`); nor
# is the table of those codes (a large module) loaded.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def print_error(error: object) -> None:
    """The one `error:` line on stderr. The message is escaped: it quotes what the user
    wrote, and a `[/]` in a key or value is not Rich markup."""
    err.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)


def fail(error: Exception) -> NoReturn:
    """Print the error's line and exit with its code (`passthru.errors`; 1 for others)."""
    print_error(error)
    raise typer.Exit(error.exit_code if isinstance(error, PassthruError) else 1) from None


def command(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a command whose PassthruErrors (API refusals, bad input) are printed as
    one line and exit with the error's code."""

    def register(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except PassthruError as error:
                fail(error)

        commands.command(name, rich_help_panel=panel_of(name))(run)
        return run

    return register


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    return str(value)


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data))


def print_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *,
                title: str | None = None, headers: Sequence[str] | None = None) -> None:
    table = Table(title=title, title_justify="left", header_style="bold")
    for header in headers or columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    out.print(table)


def print_record(record: Mapping[str, Any], *, title: str | None = None) -> None:
    """One resource as a two-column Field / Value table."""
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("Field")
    table.add_column("Value", overflow="fold")
    for key, value in record.items():
        table.add_row(key, _cell(value))
    out.print(table)


def show(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """JSON when asked for, else whatever `render` prints."""
    if as_json:
        print_json(data)
    else:
        render()
