"""`passthru serve`: run the controller."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from passthru.cli.output import command, err
from passthru.cli.store_options import (
    DataDir,
    Db,
    EventsArchive,
    KeepDeletedDays,
    KeepEventsDays,
    MaxEvents,
)
from passthru.controller.enums import Weigher
from passthru.controller.settings import (
    DEFAULT_KEEP_DELETED_DAYS,
    DEFAULT_KEEP_EVENTS_DAYS,
    DEFAULT_LISTEN,
    DEFAULT_LOADED_DEVICES,
    DEFAULT_MAX_BODY_KB,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_IMAGE_GB,
    DEFAULT_MAX_REPORT_MB,
    Settings,
    default_data_dir,
    split_listen,
)
from passthru.errors import UnavailableError

T = TypeVar("T")


def where_store(settings: Settings) -> str:
    """The store for messages, without the password a PostgreSQL URL may carry."""
    if settings.db_url is None:
        return settings.database_url.removeprefix("sqlite:///")
    from sqlalchemy.engine import make_url

    return make_url(settings.db_url).render_as_string(hide_password=True)


def opened(settings: Settings, opener: Callable[[Settings], T]) -> T:
    """`opener(settings)`; a store that cannot be opened is one line naming it."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return opener(settings)
    except (SQLAlchemyError, OSError) as error:
        raise UnavailableError(f"cannot open the store {where_store(settings)}: "
                               f"{str(error).splitlines()[0]}") from None


@command("serve")
def serve(
    db: Db = None,
    listen: Annotated[str, typer.Option(
        "--listen", help="HOST:PORT to listen on.")] = DEFAULT_LISTEN,
    data_dir: DataDir = None,
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
    max_body_size: Annotated[int, typer.Option(
        "--max-body-size", min=1, metavar="KiB",
        help="The largest request body but inventory reports and image files; larger ones "
        "get 413 before they are read.")] = DEFAULT_MAX_BODY_KB,
    max_report_size: Annotated[int, typer.Option(
        "--max-report-size", min=1, metavar="MiB",
        help="The largest inventory report an agent may send; a report takes about "
        "500 bytes a device.")] = DEFAULT_MAX_REPORT_MB,
    max_report_devices: Annotated[int, typer.Option(
        "--max-report-devices", min=1, max=65536,
        help="The most devices one inventory report may carry (a delta: added, changed "
        "and removed together); a bigger one is refused whole.")] = 65536,
    body_timeout: Annotated[float, typer.Option(
        "--body-timeout", min=0.1, max=3600.0,
        help="Seconds a client may take to send a request's headers, or pause while "
        "sending its body, before its connection is closed (with 408 for a body).")] = 30.0,
    rate_limit: Annotated[float, typer.Option(
        "--rate-limit", min=0.0,
        help="Requests per second each member token may make on average (0: no limit); "
        "past it, 429 with Retry-After. Counted by each replica on its own. Admin and "
        "agent tokens are not limited.")] = 20.0,
    rate_burst: Annotated[int, typer.Option(
        "--rate-burst", min=1,
        help="Requests a member token may make at once before --rate-limit applies.")] = 40,
    store_retry_after: Annotated[int, typer.Option(
        "--store-retry-after", min=1, max=3600,
        help="Seconds clients are told to wait (503, Retry-After) while the store cannot "
        "be reached.")] = 2,
    keep_deleted_days: KeepDeletedDays = DEFAULT_KEEP_DELETED_DAYS,
    keep_events_days: KeepEventsDays = DEFAULT_KEEP_EVENTS_DAYS,
    max_events: MaxEvents = DEFAULT_MAX_EVENTS,
    events_archive: EventsArchive = None,
    unplaced_grace: Annotated[float, typer.Option(
        "--unplaced-grace", min=1.0,
        help="Seconds after which a server left being built on no host (a controller "
        "stopped mid-boot) is failed or placed again, its ports and devices released; "
        "checked at start-up and then periodically.")] = 120.0,
    page_size: Annotated[int, typer.Option(
        "--page-size", min=1,
        help="Items on one page of a list when the request gives no limit; the body's "
        "next link has the rest.")] = 100,
    max_page_size: Annotated[int, typer.Option(
        "--max-page-size", min=1,
        help="The most items one page of a list may hold (Nova's max_limit); a bigger "
        "limit is cut to it.")] = 1000,
    orders_wait_max: Annotated[float, typer.Option(
        "--orders-wait-max", min=0.0, max=3600.0,
        help="The longest an agent's long-poll of its orders is held when nothing "
        "changes; it is then answered 304 and asked again.")] = 300.0,
    heartbeat_flush_interval: Annotated[float, typer.Option(
        "--heartbeat-flush-interval", min=0.1,
        help="Seconds between two writes of the heart-beats noted in memory (at most a "
        "quarter of --heartbeat-timeout is used).")] = 5.0,
    token_cache_seconds: Annotated[float, typer.Option(
        "--token-cache-seconds", min=0.0,
        help="Seconds a replica answers for a token from memory before looking it up in "
        "the store again (0: on every request). A revoked token fails on its next use "
        "all the same, on every replica (with PostgreSQL once the replicas are notified, "
        "within milliseconds).")] = 60.0,
    access_log: Annotated[bool, typer.Option(
        "--access-log/--no-access-log",
        help="Log a line per request. Each takes a tenth of the CPU of the cheapest "
        "request; with many agents, --no-access-log.")] = True,
    loaded_devices: Annotated[int, typer.Option(
        "--loaded-devices", min=0,
        help="The most devices the scheduler holds in memory (about 1 KiB each). It keeps "
        "every host's pool counts and reads a host's devices from the store when it "
        "places a VM there; beyond this many, the least recently used hosts' are dropped "
        "again.")] = DEFAULT_LOADED_DEVICES,
) -> None:
    """Run the controller (REST API; its description at /openapi.json).

    The first start creates the database (SQLite in the data dir unless --db names
    PostgreSQL), applies schema migrations, and writes an admin token to
    DATA_DIR/admin-token (readable by you only), which the CLI on this machine uses
    when no --token is given. Later starts migrate the schema if passthru was upgraded.
    The data dir and its files are made readable by you only (0700, 0600).

    Every hour the controller prunes deleted servers, old events (first appended to
    --events-archive, if given) and expired tokens; passthru prune does the same at once.
    """
    import uvicorn  # the web stack loads only for the server, not for every CLI call

    from passthru.asgi import create_app
    from passthru.controller.http_protocol import uvicorn_options

    host, port = split_listen(listen)
    settings = Settings(data_dir or default_data_dir(), db, heartbeat_timeout, weigher,
                        max_image_bytes=max_image_size << 30,
                        max_build_attempts=max_build_attempts, build_timeout=build_timeout,
                        max_body_bytes=max_body_size << 10,
                        max_report_bytes=max_report_size << 20,
                        max_report_devices=max_report_devices, body_timeout=body_timeout,
                        rate_limit=rate_limit, rate_burst=rate_burst,
                        store_retry_after=store_retry_after,
                        keep_deleted_days=keep_deleted_days, keep_events_days=keep_events_days,
                        max_events=max_events, events_archive=events_archive,
                        unplaced_grace=unplaced_grace, page_size=page_size,
                        max_page_size=max_page_size, orders_wait_max=orders_wait_max,
                        heartbeat_flush_interval=heartbeat_flush_interval,
                        token_cache_seconds=token_cache_seconds, access_log=access_log,
                        loaded_devices=loaded_devices)
    app = opened(settings, create_app)
    # The cyclic collector's full collections scan every object that lives on, and this
    # process holds many for long: what start-up built (the app, the index of every host)
    # and each held long-poll (up to about 185 objects, for minutes). At 10,000 hosts those
    # collections took a third of the controller's CPU with the fleet at rest
    # (bench/orders.py). So what start-up built is frozen out of the collector's sight,
    # and a full collection waits for 100 younger ones instead of 10: young cycles are
    # still collected as soon as before.
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 100)
    err.print(f"passthru controller on http://{listen}, store {where_store(settings)}, "
              f"admin token in {settings.admin_token_path}", highlight=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=settings.access_log,
                **uvicorn_options(settings))
