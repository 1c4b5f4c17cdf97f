"""`passthru prune` and `admin-token-rotate`: run on the controller's machine, against its
store directly (as `serve` opens it), while the controller runs or not."""

from __future__ import annotations

from passthru.cli.output import command, err
from passthru.cli.serve import opened, where_store
from passthru.cli.store_options import (
    DataDir,
    Db,
    EventsArchive,
    KeepDeletedDays,
    KeepEventsDays,
    MaxEvents,
)
from passthru.controller.settings import (
    DEFAULT_KEEP_DELETED_DAYS,
    DEFAULT_KEEP_EVENTS_DAYS,
    DEFAULT_MAX_EVENTS,
    Settings,
    default_data_dir,
)


@command("prune")
def prune(
    db: Db = None, data_dir: DataDir = None,
    keep_deleted_days: KeepDeletedDays = DEFAULT_KEEP_DELETED_DAYS,
    keep_events_days: KeepEventsDays = DEFAULT_KEEP_EVENTS_DAYS,
    max_events: MaxEvents = DEFAULT_MAX_EVENTS,
    events_archive: EventsArchive = None,
) -> None:
    """Prune the store now, as the controller does every hour: deleted servers that
    left their host, events past their age or count, agents' old answers, and tokens
    that expired long ago.

    Events are deleted a thousand at a time, each batch its own short transaction, so
    the controller keeps serving while a big backlog goes. To keep the history, give
    --events-archive: every pruned event is appended there first, one JSON object a line.
    """
    from passthru.controller.app import open_store
    from passthru.controller.store.retention import prune as prune_store

    settings = Settings(data_dir or default_data_dir(), db, keep_deleted_days=keep_deleted_days,
                        keep_events_days=keep_events_days, max_events=max_events,
                        events_archive=events_archive)
    store = opened(settings, open_store)
    try:
        pruned = opened(settings, lambda s: prune_store(store, s))
    finally:
        store.close()
    archived = f"; archived to {events_archive}" if events_archive and pruned.events else ""
    err.print(f"pruned {pruned.describe()} from {where_store(settings)}{archived}",
              highlight=False, soft_wrap=True)


@command("admin-token-rotate")
def admin_token_rotate(db: Db = None, data_dir: DataDir = None) -> None:
    """Replace the admin token of the data dir by a new one: the old one stops working
    at once, on every controller replica.

    The new token is written to DATA_DIR/admin-token (readable by you only). Other
    replicas' data dirs keep their own admin tokens; rotate each there.
    """
    from passthru.controller.app import open_store
    from passthru.controller.auth import rotate_admin_token

    settings = Settings(data_dir or default_data_dir(), db)
    store = opened(settings, open_store)
    try:
        with store.write() as session:
            issued = rotate_admin_token(session, settings.admin_token_path)
    finally:
        store.close()
    err.print(f"admin token {issued.row.id} written to {settings.admin_token_path}; the old "
              "one no longer works", highlight=False, soft_wrap=True)
