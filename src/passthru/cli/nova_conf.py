"""Reading `[pci] alias = {...}` lines out of a nova.conf."""

from __future__ import annotations

import re

_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_ALIAS = re.compile(r"^\s*alias\s*[=:]\s*(?P<value>.+?)\s*$")


def alias_lines(text: str) -> list[tuple[int, str]]:
    """(line number, JSON) of every `alias` option in the `[pci]` section.

    nova.conf repeats `alias` once per alias, which configparser cannot keep, hence this
    reader. A file without sections is read as the body of a `[pci]` section.
    """
    section = "pci" if not any(_SECTION.match(line) for line in text.splitlines()) else ""
    found: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(("#", ";")):
            continue
        header = _SECTION.match(line)
        if header:
            section = header["name"].strip().lower()
            continue
        option = _ALIAS.match(line)
        if option and section == "pci":
            found.append((number, option["value"]))
    return found
