"""The data dir is its owner's alone: directories 0700, files 0600.

It holds the token digests, the admin token and every project's data (the SQLite file,
uploaded images). Each file is created with its final mode (`os.open` with 0600, `mkdir`
with 0700), never created loose and tightened after, so there is no moment at which
another user could open it. SQLite creates its `-wal` and `-shm` files with the mode of
the database file, so the database file is created 0600 before SQLite first opens it.
A data dir left by an older passthru (0755 and 0644) is tightened at start-up, with a log
line saying so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
#: Any permission for the group or others.
_LOOSE = 0o077


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner may enter, created if needed, and so are the
    parents it lacks (`mkdir -p` would give those the default mode)."""
    if not path.is_dir():
        private_dir(path.parent)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=DIR_MODE)
    return path


def create_private(path: Path) -> int:
    """A new file at `path`, open for writing, that only its owner may read: its
    descriptor. Fails if `path` exists."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)


def touch_private(path: Path) -> None:
    """Make sure `path` exists; if it has to be created, it is created 0600."""
    with contextlib.suppress(FileExistsError):
        os.close(create_private(path))


def append_private(path: Path) -> int:
    """`path` open for appending, created 0600 if it does not exist: its descriptor."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)


def tighten(root: Path) -> int:
    """Take every permission of the group and others off `root` and everything under
    it (symbolic links are left alone); returns how many entries were loose."""
    loose = 0
    # os.walk does not descend into linked directories; a linked root is followed.
    for directory, _dirs, files in os.walk(root.resolve()):
        for entry in [Path(directory), *(Path(directory, name) for name in files)]:
            mode = entry.lstat().st_mode
            if stat.S_ISLNK(mode) or not stat.S_IMODE(mode) & _LOOSE:
                continue
            entry.chmod(DIR_MODE if stat.S_ISDIR(mode) else FILE_MODE)
            loose += 1
    return loose


def secure_data_dir(root: Path) -> None:
    """Create the data dir 0700, or tighten an existing one and log what was fixed."""
    private_dir(root)
    if fixed := tighten(root):
        log.warning("%s: %d file(s) or dir(s) were open to other users; now only their "
                    "owner may read them (dirs 0700, files 0600): the data dir holds the "
                    "token digests and every project's data", root, fixed)
