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
    if sysfs_root is not None:
        lines += ['source = "sysfs"', f"sysfs_root = {_string(str(sysfs_root.resolve()))}"]
    elif nodedev_xml is not None:
        lines.append('source = "libvirt"')
    if nodedev_xml is not None:
        # libvirt's test driver over the node XML: the host's domains live there, and with
        # source = "libvirt" its devices are read from it too.
        lines.append(f"libvirt_uri = {_string(f'test://{nodedev_xml.resolve()}')}")
    # A simulated host has no VFs to program: their settings are recorded instead.
    lines.append('vf_applier = "simulated"')
    lines.append(f"pool_attrs = {_value(profile.pool_attrs)}")
    for entry in profile.pci_information:
        lines += ["", "[[pci_information]]"]
        lines += [f"{_key(key)} = {_value(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"
