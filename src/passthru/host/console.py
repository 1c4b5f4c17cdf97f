"""The tail of a server's serial console log, which the agent sends to the controller.

The host runtime writes each domain's serial console to
`<instances_path>/<server uuid>/console.log`. A guest may log without end, so only the last
`CONSOLE_TAIL` bytes are read, starting at a line boundary so that the first line is whole.
"""

from __future__ import annotations

import os
from pathlib import Path

CONSOLE_TAIL = 64 * 1024
CONSOLE_FILE = "console.log"


def console_path(instances_path: Path, server_uuid: str) -> Path:
    return instances_path / server_uuid / CONSOLE_FILE


def read_console_tail(path: Path, limit: int = CONSOLE_TAIL) -> str | None:
    """The last `limit` bytes of the log at `path` as text; None when there is no log."""
    try:
        with path.open("rb") as file:
            start = max(0, file.seek(0, os.SEEK_END) - limit)
            file.seek(start)
            data = file.read(limit)
    except FileNotFoundError:
        return None
    if start > 0 and (newline := data.find(b"\n")) != -1:
        data = data[newline + 1:]
    # A guest writes whatever bytes it likes; a broken sequence must not stop the log.
    return data.decode("utf-8", errors="replace")
