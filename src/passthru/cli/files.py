"""Files a command sends (a public key, user-data, an image's disk), checked before
anything is sent so that a typo in a path fails at once, naming the option."""

from __future__ import annotations

from pathlib import Path

from passthru.errors import InvalidInputError


def readable(path: Path, option: str) -> Path:
    """`path`, if it is a file this user can read."""
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise InvalidInputError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{option} {path}: is a directory, not a file") from None
    except OSError as error:
        raise InvalidInputError(f"{option} {path}: cannot be read ({error.strerror})") from None
    return path


def read_text(path: Path, option: str, *, limit: int) -> str:
    """The text of a small file, at most `limit` bytes."""
    if readable(path, option).stat().st_size > limit:
        raise InvalidInputError(f"{option} {path}: over {limit} bytes")
    try:
        return path.read_bytes().decode()
    except UnicodeDecodeError:
        raise InvalidInputError(f"{option} {path}: not UTF-8 text") from None
