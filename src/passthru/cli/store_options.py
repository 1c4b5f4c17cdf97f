"""Options of the commands that open the store themselves (serve, prune,
admin-token-rotate), on the controller's machine, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from passthru.controller.settings import DATA_DIR_ENV

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
