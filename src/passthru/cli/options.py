"""Options every client command takes, and those of the commands that open the store,
declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from passthru.cli.client import DEFAULT_RETRY_SECONDS, RETRY_ENV, TOKEN_ENV, URL_ENV
from passthru.controller.settings import DATA_DIR_ENV

Url = Annotated[str | None, typer.Option(
    "--url", envvar=URL_ENV, show_default="http://127.0.0.1:8774",
    help="The controller's address. While it cannot be reached, is restarting, or is busy "
    f"(502, 503, 504, 429), requests are tried again for {DEFAULT_RETRY_SECONDS:g} s, or "
    f"{RETRY_ENV} (0: never).")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar=TOKEN_ENV, show_default="the admin-token file of the local data dir",
    help="Bearer token (from passthru token-create, or the admin token).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]

# The commands that open the store themselves (serve, prune, admin-token-rotate), on the
# controller's machine.
Db = Annotated[str | None, typer.Option(
    "--db", envvar="PASSTHRU_DB", show_default="SQLite file in the data dir",
    help="Database URL, e.g. postgresql+psycopg://user:pass@host/passthru.")]
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", envvar=DATA_DIR_ENV, show_default="the user's data dir",
    help="Holds the SQLite file, the admin-token file and uploaded images.")]
KeepDeletedDays = Annotated[float, typer.Option(
    "--keep-deleted-days", min=0.0, metavar="DAYS",
    help="Prune deleted servers (once their host destroyed them) and expired tokens this "
         "many days after; 0 keeps them for ever.")]
KeepEventsDays = Annotated[float, typer.Option(
    "--keep-events-days", min=0.0, metavar="DAYS",
    help="Prune events older than this; 0 keeps them whatever their age.")]
MaxEvents = Annotated[int, typer.Option(
    "--max-events", min=0, help="Keep at most this many events, the newest; 0: no limit.")]
EventsArchive = Annotated[Path | None, typer.Option(
    "--events-archive", metavar="FILE", show_default="not kept",
    help="Append each pruned event to FILE as a JSON line (the fields passthru events "
         "--json shows) before it is deleted. Replicas prune too: give each its own "
         "archive, or --keep-events-days 0 --max-events 0 and prune with passthru prune.")]
