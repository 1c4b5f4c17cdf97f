"""Options every client command takes, declared once (those of the commands that open the
store are in `store_options`, which loads the controller's settings)."""

from __future__ import annotations

from typing import Annotated

import typer

from passthru.client import DEFAULT_RETRY_SECONDS, RETRY_ENV, TOKEN_ENV, URL_ENV

Url = Annotated[str | None, typer.Option(
    "--url", envvar=URL_ENV, show_default="http://127.0.0.1:8774",
    help="The controller's address. While it cannot be reached, is restarting, or is busy "
    f"(502, 503, 504, 429), requests are tried again for {DEFAULT_RETRY_SECONDS:g} s, or "
    f"{RETRY_ENV} (0: never).")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar=TOKEN_ENV, show_default="the admin-token file of the local data dir",
    help="Bearer token (from passthru token-create, or the admin token).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
