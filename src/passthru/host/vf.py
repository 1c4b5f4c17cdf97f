"""SR-IOV VF settings through the PF's netdev: MAC, VLAN, spoof checking, trust, link state
and TX rate, set before a VM starts and reset after it is gone.

`vf_request` builds the IFLA_VF_* request as the `vf` dict that pyroute2's
`IPRoute.link("set", index=…, vf=…)` takes; it is pure and testable anywhere. The applier
sends it one setting per message, so that a refusal names the setting the kernel refused.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from passthru.errors import HostError, InvalidInputError
from passthru.pci.binding import ZERO_MAC, Binding, VifType, normalize_mac, unicast_mac

_MAX_VLAN = 4094
_HINTS = {
    errno.EOPNOTSUPP: "the PF has no SR-IOV VFs or its driver does not offer this setting",
    errno.EINVAL: "the VF may not exist (check the PF's sriov_numvfs) or the driver "
                  "refuses the value",
    errno.EPERM: "the agent needs CAP_NET_ADMIN",
    errno.ENODEV: "the PF netdev went away",
}


class VfConfigError(HostError):
    """The kernel refused a VF setting, or the PF or VF cannot be found."""


class LinkState(IntEnum):
    """IFLA_VF_LINK_STATE values: follow the PF's link, or force the VF's up or down."""

    AUTO = 0
    ENABLE = 1
    DISABLE = 2


@dataclass(frozen=True, slots=True)
class VfRate:
    """TX rate in Mbit/s: a guaranteed minimum and a cap; 0 means none."""

    min_mbps: int = 0
    max_mbps: int = 0

    def __post_init__(self) -> None:
        if self.min_mbps < 0 or self.max_mbps < 0:
            raise InvalidInputError(f"VF rate min {self.min_mbps} / max {self.max_mbps} Mbit/s: "
                                    f"rates cannot be negative (0 means no limit)")
        if self.max_mbps and self.min_mbps > self.max_mbps:
            raise InvalidInputError(f"VF rate min {self.min_mbps} Mbit/s exceeds max "
                                    f"{self.max_mbps} Mbit/s")


@dataclass(frozen=True, slots=True)
class VfConfig:
    """Settings for one VF; None leaves a setting as it is.

    `mac` 00:00:00:00:00:00 clears the VF's administrative MAC; `vlan` 0 is untagged.
    """

    mac: str | None = None
    vlan: int | None = None
    spoofchk: bool | None = None
    trust: bool | None = None
    link_state: LinkState | None = None
    rate: VfRate | None = None

    def __post_init__(self) -> None:
        if self.mac is not None:
            mac = normalize_mac(self.mac, "VF mac address")
            if mac != ZERO_MAC:  # clearing the VF's MAC is the one non-unicast allowed
                unicast_mac(self.mac, "VF mac address")
            object.__setattr__(self, "mac", mac)
        if self.vlan is not None and not 0 <= self.vlan <= _MAX_VLAN:
            raise InvalidInputError(f"VF vlan {self.vlan} is out of range "
                                    f"(0 for untagged, up to {_MAX_VLAN})")


#: A VF after use: no MAC, untagged, spoof checking on, untrusted, link following the PF,
#: no rate limits.
RESET = VfConfig(mac=ZERO_MAC, vlan=0, spoofchk=True, trust=False, link_state=LinkState.AUTO,
                 rate=VfRate())


def vf_config_for(binding: Binding) -> VfConfig | None:
    """The VF settings a bound port needs (None when it plugs no VF).

    Spoof checking follows port security and trust is always set, so that nothing a
    previous user left behind survives. An 802.1Qbh profile brings its own VLAN, so the
    VLAN is then left alone; rates are only sent when asked for, since many drivers
    support no rate limiting at all.
    """
    if binding.vif_type is not VifType.HW_VEB:
        return None
    wants_rate = binding.min_tx_rate or binding.max_tx_rate
    return VfConfig(
        mac=binding.mac,
        vlan=None if binding.profile_id is not None else (binding.vlan or 0),
        spoofchk=binding.port_security,
        trust=binding.trusted,
        rate=VfRate(binding.min_tx_rate, binding.max_tx_rate) if wants_rate else None,
    )


def vf_request(vf: int, config: VfConfig) -> dict[str, object]:
    """The `vf` argument of pyroute2's `link("set", …)` for VF number `vf` of a PF."""
    if vf < 0:
        raise InvalidInputError(f"VF number {vf} is negative; VFs count from 0 (virtfn0)")
    request: dict[str, object] = {"vf": vf}
    if config.mac is not None:
        request["mac"] = config.mac
    if config.vlan is not None:
        request["vlan"] = config.vlan
    if config.spoofchk is not None:
        request["spoofchk"] = int(config.spoofchk)
    if config.trust is not None:
        request["trust"] = int(config.trust)
    if config.link_state is not None:
        request["link_state"] = int(config.link_state)
    if config.rate is not None:
        request["rate"] = {"min_tx_rate": config.rate.min_mbps,
                           "max_tx_rate": config.rate.max_mbps}
    return request


def _open(netns: str | None) -> IPRoute:
    if netns is None:
        return IPRoute()
    try:
        # flags=0: never create the namespace we were asked to work in.
        return IPRoute(netns=netns, flags=0)
    except FileNotFoundError:
        raise VfConfigError(f"network namespace {netns!r} does not exist") from None


def _shown(setting: str, value: object) -> str:
    """A setting's value as `ip link set … vf N` would spell it."""
    if isinstance(value, dict):
        return f"min {value['min_tx_rate']} / max {value['max_tx_rate']} Mbit/s"
    if setting in ("spoofchk", "trust"):
        return "on" if value else "off"
    if setting == "link_state" and isinstance(value, int):
        return LinkState(value).name.lower()
    return str(value)


def _refusal(pf: str, vf: int, setting: str, value: object, error: NetlinkError) -> str:
    reason = os.strerror(error.code).lower()
    hint = _HINTS.get(error.code)
    text = f"cannot set {setting} {_shown(setting, value)} on VF {vf} of PF {pf}: {reason}"
    return f"{text} ({hint})" if hint else text


def apply_vf_config(pf: str, vf: int, config: VfConfig, *, netns: str | None = None,
                    skip_unsupported: bool = False) -> tuple[str, ...]:
    """Set `config` on VF `vf` of the PF netdev `pf`, one setting at a time.

    With `skip_unsupported` a setting the driver does not offer is skipped instead of
    failing; the skipped settings are returned.
    """
    request = vf_request(vf, config)
    skipped: list[str] = []
    with _open(netns) as ipr:
        found = ipr.link_lookup(ifname=pf)
        if not found:
            where = f" in network namespace {netns!r}" if netns else ""
            raise VfConfigError(f"PF netdev {pf!r} not found{where}; check the PF's netdev "
                                f"name (it changes when its driver is rebound)")
        for setting, value in request.items():
            if setting == "vf":
                continue
            # pyroute2 writes into the dicts it is given: hand it a fresh one each time.
            single = {"vf": vf, setting: dict(value) if isinstance(value, dict) else value}
            try:
                ipr.link("set", index=found[0], vf=single)
            except NetlinkError as error:
                if skip_unsupported and error.code == errno.EOPNOTSUPP:
                    skipped.append(setting)
                    continue
                raise VfConfigError(_refusal(pf, vf, setting, value, error)) from None
    return tuple(skipped)


def reset_vf(pf: str, vf: int, *, netns: str | None = None) -> tuple[str, ...]:
    """Put VF `vf` of `pf` back to `RESET`; returns the settings its driver does not offer
    (they cannot have been changed either)."""
    return apply_vf_config(pf, vf, RESET, netns=netns, skip_unsupported=True)


def vf_index(sysfs_root: str | Path, pf_addr: str, vf_addr: str) -> int:
    """The number of VF `vf_addr` under PF `pf_addr`, from the PF's `virtfnN` links."""
    pf_dir = Path(sysfs_root) / "bus" / "pci" / "devices" / pf_addr
    if not pf_dir.is_dir():
        raise VfConfigError(f"PF {pf_addr} not found under {pf_dir.parent}")
    numbered = {link: link.name.removeprefix("virtfn") for link in pf_dir.glob("virtfn*")}
    links = {link: int(number) for link, number in numbered.items() if number.isdigit()}
    for link, number in links.items():
        if link.readlink().name == vf_addr:
            return number
    raise VfConfigError(f"{vf_addr} is not a VF of PF {pf_addr} ({pf_dir} has {len(links)} "
                        f"virtfn links); the VF list may have changed since discovery")
