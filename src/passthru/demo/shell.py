"""Run passthru commands as a person would type them, and show them being typed.

Each command is printed as `$ passthru ...` and then run by the `passthru` program itself
(its Typer app, in this process: the same code as the installed command, without a
Python start-up per command), against the demo's controller through PASSTHRU_URL and
PASSTHRU_TOKEN. The program is handed in by `passthru demo` (`cli/demo.py`): the demo
sits below the CLI and imports none of it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from passthru.client import TOKEN_ENV, URL_ENV

#: Runs `passthru ARGS` and returns its exit status.
Program = Callable[[list[str]], int]


@dataclass(frozen=True, slots=True)
class Ran:
    """A finished command: its exit status and, when it was captured, its output."""

    status: int
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0


@contextlib.contextmanager
def pointed_at(url: str, token: str) -> Iterator[None]:
    """PASSTHRU_URL and PASSTHRU_TOKEN name the demo's controller while inside."""
    saved = {name: os.environ.get(name) for name in (URL_ENV, TOKEN_ENV)}
    os.environ[URL_ENV], os.environ[TOKEN_ENV] = url, token
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class Shell:
    console: Console
    program: Program

    def echo(self, args: tuple[str, ...], note: str | None = None) -> None:
        line = Text("$ passthru ", style="bold green")
        line.append(shlex.join(args), style="bold")
        if note:
            line.append(f"   # {note}", style="dim")
        self.console.print(line, soft_wrap=True)

    def run(self, *args: str, quiet: bool = False, note: str | None = None) -> Ran:
        """Print and run `passthru ARGS`. With `quiet` its output is kept, not shown,
        unless it fails: creating a catalog entry prints the entry, which says nothing
        new here."""
        self.echo(args, note)
        if not quiet:
            return Ran(self.program(list(args)))
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            status = self.program(list(args))
        if status:
            self.console.print(Text.from_ansi(captured.getvalue().rstrip()))
        return Ran(status, captured.getvalue())
