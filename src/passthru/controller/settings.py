"""Where the controller keeps its state and how it is reached."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from passthru.controller.scheduler.weighers import Weigher

DATA_DIR_ENV = "PASSTHRU_DATA_DIR"
DEFAULT_LISTEN = "127.0.0.1:8774"
ADMIN_TOKEN_FILE = "admin-token"
DATABASE_FILE = "passthru.sqlite"
IMAGES_DIR = "images"
#: The largest image file an upload may bring, unless `passthru serve` is told otherwise.
DEFAULT_MAX_IMAGE_GB = 64


def default_data_dir() -> Path:
    """`PASSTHRU_DATA_DIR` if set, else the user's data dir (~/.local/share/passthru)."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured) if configured else Path(platformdirs.user_data_dir("passthru"))


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
    #: The most devices one agent report may carry (a full report's devices, or a delta's
    #: added, changed and removed together; at most 65536, the API's own bound); a bigger
    #: one is refused whole.
    max_report_devices: int = 65536

    # --- store outages ---

    # --- tokens ---

    # --- retention: pruning deleted servers, events and agents' answers ---

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / DATABASE_FILE}"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / ADMIN_TOKEN_FILE

    @property
    def image_dir(self) -> Path:
        """Where uploaded image files are kept, `<image id>/<part>` each."""
        return self.data_dir / IMAGES_DIR
