"""Options every client command takes, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from passthru.cli.client import TOKEN_ENV, URL_ENV

Url = Annotated[str | None, typer.Option(
    "--url", envvar=URL_ENV, show_default="http://127.0.0.1:8774",
    help="The controller's address.")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar=TOKEN_ENV, show_default="the admin-token file of the local data dir",
    help="Bearer token (from passthru token-create, or the admin token).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
