"""Where the controller keeps its state and how it is reached."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from passthru.controller.enums import Weigher
from passthru.errors import InvalidInputError

DATA_DIR_ENV = "PASSTHRU_DATA_DIR"
DEFAULT_LISTEN = "127.0.0.1:8774"
ADMIN_TOKEN_FILE = "admin-token"
DATABASE_FILE = "passthru.sqlite"
IMAGES_DIR = "images"
#: The largest image file an upload may bring, unless `passthru serve` is told otherwise.
DEFAULT_MAX_IMAGE_GB = 64
#: The largest request body (but reports and image files), unless serve is told otherwise.
DEFAULT_MAX_BODY_KB = 1024
#: The largest agent inventory report, unless `passthru serve` is told otherwise.
DEFAULT_MAX_REPORT_MB = 64
#: How long the store keeps deleted servers and events, and how many events at most.
DEFAULT_KEEP_DELETED_DAYS = 30.0
DEFAULT_KEEP_EVENTS_DAYS = 90.0
DEFAULT_MAX_EVENTS = 1_000_000
#: The most devices the scheduler's index holds, unless `passthru serve` is told otherwise.
DEFAULT_LOADED_DEVICES = 100_000


def default_data_dir() -> Path:
    """`PASSTHRU_DATA_DIR` if set, else the user's data dir (~/.local/share/passthru)."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured) if configured else Path(platformdirs.user_data_dir("passthru"))


def split_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`--listen`) as a host and a port; an IPv6 host may be bracketed."""
    host, _, port = text.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise InvalidInputError(f"--listen {text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN}, "
                                "or 0.0.0.0:8774 to listen on every interface)")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class Settings:
    """`db_url` None means the SQLite file in `data_dir`."""

    data_dir: Path
    db_url: str | None = None
    #: A host that has not heart-beaten for this long is marked down.
    heartbeat_timeout: float = 180.0
    #: Pack VMs onto the fullest hosts, or spread them over the emptiest.
    weigher: Weigher = Weigher.PACK
    #: How often the scheduler's index is checked against the store, which other
    #: controller replicas change too.
    resync_interval: float = 10.0
    #: The largest file an image upload may bring (disk, kernel or initrd), in bytes.
    max_image_bytes: int = DEFAULT_MAX_IMAGE_GB << 30
    #: Spawns a server gets, each on another host, before it goes to ERROR.
    max_build_attempts: int = 3
    #: A server still BUILD this many seconds after it was created goes to ERROR.
    build_timeout: float = 1800.0
    #: A server left BUILD with no host this long (its controller stopped between creating
    #: and placing it) is picked up by the build sweep.
    unplaced_grace: float = 120.0

    # --- request limits: body sizes, slow clients, rate limit (middleware) ---
    #: The largest request body, in bytes, of any request but an agent's inventory report
    #: and an image file upload (`max_image_bytes`).
    max_body_bytes: int = DEFAULT_MAX_BODY_KB << 10
    #: The largest inventory report (PUT or PATCH .../inventory) an agent may send, in bytes.
    max_report_bytes: int = DEFAULT_MAX_REPORT_MB << 20
    #: A client that sends no byte of its request body for this many seconds gets 408 and
    #: its connection is closed; so is one whose request headers take longer (uvicorn).
    body_timeout: float = 30.0
    #: Requests per second a member token may make, on average (0: no limit). Admin and
    #: agent tokens are not limited: the admin is the operator, an agent's pace is its
    #: host config's intervals.
    rate_limit: float = 20.0
    #: Requests a member token may make at once before `rate_limit` applies.
    rate_burst: int = 40
    #: The most devices one agent report may carry (a full report's devices, or a delta's
    #: added, changed and removed together; at most 65536, the API's own bound); a bigger
    #: one is refused whole.
    max_report_devices: int = 65536

    # --- store outages ---
    #: Seconds a client is told to wait (Retry-After) when the store cannot be reached.
    store_retry_after: int = 2

    # --- tokens ---

    # --- retention: pruning deleted servers, events and agents' answers ---
    #: DELETED servers (that left their host) and expired tokens are pruned this many
    #: days after; 0 keeps them for ever.
    keep_deleted_days: float = DEFAULT_KEEP_DELETED_DAYS
    #: Events are pruned this many days after they happened; 0: kept whatever their age.
    keep_events_days: float = DEFAULT_KEEP_EVENTS_DAYS
    #: Beyond this many events the oldest are pruned; 0: no limit.
    max_events: int = DEFAULT_MAX_EVENTS
    #: Agents' answers are kept this many hours, for the agents' replays of them.
    keep_answers_hours: float = 24.0
    #: Where pruned events are appended as JSON lines before they are deleted (None:
    #: they are not kept anywhere).
    events_archive: Path | None = None
    #: Seconds between two rounds of pruning.
    prune_interval: float = 3600.0

    # --- pushed orders and heart-beats ---
    #: The longest an agent's orders long-poll is held, in seconds, before it is answered
    #: "unchanged" (agents ask for 300 s). While held it counts as the agent's heart-beat,
    #: noted again every third of heartbeat_timeout, so an idle agent sends nothing else.
    orders_wait_max: float = 300.0
    #: Seconds between two writes of the heart-beats a replica took (one statement for
    #: all of them); at most a quarter of heartbeat_timeout is used.
    heartbeat_flush_interval: float = 5.0

    # --- views: pagination and summaries ---
    #: Items on one page of a list (servers, hosts, PCI stats, ...) when the request gives
    #: no `limit`; the body's `<list>_links` has the next page's address.
    page_size: int = 100
    #: The most items one page may hold (Nova's `max_limit`): a bigger `limit` is cut to it.
    max_page_size: int = 1000

    # --- the boot path: durability and batching ---

    # --- the request path: HTTP server, token cache ---
    #: Seconds a replica answers for a token from memory before it looks the token up in
    #: the store again (0: every request looks its token up). A revoked token fails on
    #: its next use sooner than that (`controller.token_cache`); this bounds how long a
    #: notification of a revoke that was lost unnoticed could go unseen.
    token_cache_seconds: float = 60.0
    #: Whether the web server logs a line per request (uvicorn's access log): a tenth of
    #: the CPU of the cheapest request.
    access_log: bool = True

    # --- the scheduler's index: start-up and memory ---

    #: The most devices the scheduler's index holds in memory. It keeps every host's pool
    #: counts, which is all its decisions and the views need, and reads a host's devices
    #: from the store when a placement picks it; beyond this many, those of the hosts
    #: least recently used are dropped again (about 1 KiB each). 0 holds none between
    #: decisions.
    loaded_devices: int = DEFAULT_LOADED_DEVICES

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file, used when `db_url` is None."""
        return self.data_dir / DATABASE_FILE

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.sqlite_path}"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / ADMIN_TOKEN_FILE

    @property
    def image_dir(self) -> Path:
        """Where uploaded image files are kept, `<image id>/<part>` each."""
        return self.data_dir / IMAGES_DIR
