"""`passthru serve`: run the controller."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from passthru.cli.output import command, err
from passthru.controller.scheduler.weighers import Weigher
from passthru.controller.settings import (
    DATA_DIR_ENV,
    DEFAULT_LISTEN,
    DEFAULT_MAX_IMAGE_GB,
    Settings,
    default_data_dir,
)
from passthru.pci.errors import PassthruError


def split_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise PassthruError(f"--listen {text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN}, "
                            "or 0.0.0.0:8774 to listen on every interface)")
    return host.strip("[]"), int(port)


def where_store(settings: Settings) -> str:
    """The store for messages, without the password a PostgreSQL URL may carry."""
    if settings.db_url is None:
        return settings.database_url.removeprefix("sqlite:///")
    from sqlalchemy.engine import make_url

    return make_url(settings.db_url).render_as_string(hide_password=True)


@command("serve")
def serve(
    db: Annotated[str | None, typer.Option(
        "--db", envvar="PASSTHRU_DB", show_default="SQLite file in the data dir",
        help="Database URL, e.g. postgresql+psycopg://user:pass@host/passthru.")] = None,
    listen: Annotated[str, typer.Option(
        "--listen", help="HOST:PORT to listen on.")] = DEFAULT_LISTEN,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", envvar=DATA_DIR_ENV, show_default="the user's data dir",
        help="Holds the SQLite file, the admin-token file and uploaded images.")] = None,
    heartbeat_timeout: Annotated[float, typer.Option(
        "--heartbeat-timeout", min=1.0,
        help="Seconds without a heart-beat after which a host is marked down.")] = 180.0,
    weigher: Annotated[Weigher, typer.Option(
        "--weigher", help="pack: fill the fullest hosts first, keeping whole hosts free for "
        "big VMs; spread: the emptiest first, balancing load.")] = Weigher.PACK,
    max_image_size: Annotated[int, typer.Option(
        "--max-image-size", min=1, metavar="GiB",
        help="The largest image file (disk, kernel, initrd) an upload may bring.")
    ] = DEFAULT_MAX_IMAGE_GB,
    max_build_attempts: Annotated[int, typer.Option(
        "--max-build-attempts", min=1,
        help="Spawns a server gets, each on another host, before it goes to ERROR.")] = 3,
    build_timeout: Annotated[float, typer.Option(
        "--build-timeout", min=1.0,
        help="Seconds after which a server still being built goes to ERROR.")] = 1800.0,
) -> None:
    """Run the controller (REST API; its description at /openapi.json).

    The first start creates the database (SQLite in the data dir unless --db names
    PostgreSQL), applies schema migrations, and writes an admin token to
    DATA_DIR/admin-token (readable by you only), which the CLI on this machine uses
    when no --token is given. Later starts migrate the schema if passthru was upgraded.
    """
    import uvicorn  # the web stack loads only for the server, not for every CLI call
    from sqlalchemy.exc import SQLAlchemyError

    from passthru.controller.app import create_app

    host, port = split_listen(listen)
    settings = Settings(data_dir or default_data_dir(), db, heartbeat_timeout, weigher,
                        max_image_bytes=max_image_size << 30,
                        max_build_attempts=max_build_attempts, build_timeout=build_timeout)
    try:
        app = create_app(settings)
    except (SQLAlchemyError, OSError) as error:
        raise PassthruError(f"cannot open the store {where_store(settings)}: "
                            f"{str(error).splitlines()[0]}") from None
    err.print(f"passthru controller on http://{listen}, store {where_store(settings)}, "
              f"admin token in {settings.admin_token_path}", highlight=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
