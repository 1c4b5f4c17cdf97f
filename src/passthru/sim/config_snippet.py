"""A ready-to-use host config (TOML) for a simulated host, printed by `passthru sim`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from passthru.sim.profile import HostProfile

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _string(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
    return json.dumps(value)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: object) -> str:
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return _string(str(value))


def host_config_toml(
    profile: HostProfile,
    *,
    sysfs_root: Path | None = None,
    nodedev_xml: Path | None = None,
    controller: str = "http://127.0.0.1:8774",
) -> str:
    """A host config for `profile`, reading the tree at `sysfs_root` or, when only
    `nodedev_xml` is given, the libvirt test driver over that file."""
    lines = [
        f"# passthru host config for the simulated host {profile.name!r}:",
        f"# {profile.description}",
        f"controller = {_string(controller)}",
        f"host = {_string('sim-' + profile.name)}",
    ]
    libvirt_uri = f"test://{nodedev_xml.resolve()}" if nodedev_xml else None
    if sysfs_root is not None:
        lines += ['source = "sysfs"', f"sysfs_root = {_string(str(sysfs_root.resolve()))}"]
        if libvirt_uri:
            lines.append(f'# or: source = "libvirt" with libvirt_uri = {_string(libvirt_uri)}')
    elif libvirt_uri:
        lines += ['source = "libvirt"', f"libvirt_uri = {_string(libvirt_uri)}"]
    lines.append(f"pool_attrs = {_value(profile.pool_attrs)}")
    for entry in profile.pci_information:
        lines += ["", "[[pci_information]]"]
        lines += [f"{_key(key)} = {_value(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"
