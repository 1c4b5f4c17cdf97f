"""VF settings for simulated hosts: recorded in a file instead of sent through netlink.

A simulated host (`passthru sim`) has no SR-IOV hardware, so netlink would refuse every VF
setting ("operation not supported"). With `vf_applier = "simulated"` in the host config,
the agent writes what it would have sent to `<sysfs_root>/vf-state.json` instead: one
entry per VF address with its PF netdev, its VF number and its current settings, merged
the way the kernel keeps them (a setting not sent stays as it was; a reset sets them all
back). The file lives in the simulated tree, so rebuilding the host starts it afresh.

```json
{"0000:5e:01.0": {"pf": "enp94s0f0", "vf": 0, "mac": "fa:16:3e:00:00:01", "vlan": 100,
                  "spoofchk": true, "trust": false}}
```
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from passthru.host.attach import VfSlot
from passthru.host.vf import RESET, LinkState, VfConfig, VfConfigError, vf_request

STATE_FILE = "vf-state.json"
_REAL_SYSFS = Path("/sys")


def vf_state_path(sysfs_root: Path) -> Path:
    """Where a simulated host's VF settings are recorded."""
    return sysfs_root / STATE_FILE


def read_vf_state(path: Path) -> dict[str, dict[str, Any]]:
    """The recorded settings by VF address; empty before any VF was configured."""
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


def _link_state_name(value: Any) -> str:
    return LinkState(value).name.lower()


#: Netlink's integers as a person reads them; other values are kept as sent.
_READABLE: dict[str, Callable[[Any], Any]] = {
    "spoofchk": bool, "trust": bool, "link_state": _link_state_name}


def _settings(vf: VfSlot, config: VfConfig) -> dict[str, Any]:
    """The netlink request for `config`, less the VF number, in readable values."""
    return {key: _READABLE.get(key, _as_sent)(value)
            for key, value in vf_request(vf.index, config).items() if key != "vf"}


#: One read-modify-write of a state file at a time.
_WRITING = threading.Lock()


def _as_sent(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class SimulatedVfApplier:
    """A `VfApplier` for the simulated host whose sysfs tree is at `sysfs_root`."""

    sysfs_root: Path

    def __post_init__(self) -> None:
        if self.sysfs_root.resolve() == _REAL_SYSFS:
            raise VfConfigError(
                f"vf_applier = 'simulated' only records VF settings for a simulated host "
                f"(passthru sim), but sysfs_root is this machine's own {_REAL_SYSFS}; use "
                f"vf_applier = 'netlink' for real VFs")
        if not (self.sysfs_root / "bus" / "pci" / "devices").is_dir():
            raise VfConfigError(
                f"vf_applier = 'simulated': {self.sysfs_root} holds no sysfs tree "
                f"(no bus/pci/devices); build one with passthru sim PROFILE --root DIR")

    @property
    def state_file(self) -> Path:
        return vf_state_path(self.sysfs_root)

    def apply(self, vf: VfSlot, config: VfConfig) -> None:
        with _WRITING:  # the agent spawns several servers at once
            state = read_vf_state(self.state_file)
            entry = state.get(vf.address, {})
            state[vf.address] = {**entry, "pf": vf.pf_netdev, "vf": vf.index,
                                 **_settings(vf, config)}
            self._write(state)

    def reset(self, vf: VfSlot) -> None:
        self.apply(vf, RESET)

    def _write(self, state: dict[str, dict[str, Any]]) -> None:
        # Replaced whole, so that a reader (passthru demo) never sees half a file.
        text = json.dumps(state, indent=2, sort_keys=True) + "\n"
        handle, temporary = tempfile.mkstemp(dir=self.sysfs_root, prefix=f".{STATE_FILE}.")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
            Path(temporary).replace(self.state_file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
