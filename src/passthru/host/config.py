"""The host config (TOML) that `passthru agent` and `passthru discover` read.

```toml
controller = "http://127.0.0.1:8774"
host = "compute-1"                  # default: this machine's hostname
token = "..."                       # default: $PASSTHRU_TOKEN
source = "sysfs"                    # or "libvirt" (node devices)
sysfs_root = "/sys"                 # relative paths are relative to this file
libvirt_uri = "qemu:///system"
instances_path = "/var/lib/passthru/instances"   # per server: console.log; relative as sysfs_root
vf_applier = "netlink"              # "simulated": record VF settings (passthru sim hosts)
interval = 60                       # seconds between re-scans
pool_attrs = ["vendor_id", "product_id", "e.physical_network"]
instances_path = "/var/lib/passthru/instances"  # VM disks, seed ISOs, console logs; its disk
image_cache = "/var/lib/passthru/images"        # images fetched from the controller, once
domain_type = "auto"                # "kvm", or "qemu" (TCG); auto: kvm if it runs guests
bridge_mappings = { physnet1 = "br-prov" }      # normal ports: physical network → bridge
libvirt_netns = "vms"               # where libvirtd makes bridges' taps (default: the agent's)
cpu_allocation_ratio = 4.0          # vCPUs per host CPU (Nova's defaults)
ram_allocation_ratio = 1.0
disk_allocation_ratio = 1.0
reserved_cpus = [0, 1]              # host CPUs kept for the host itself
reserved_host_memory_mb = 512
reserved_host_disk_gb = 0

[[pci_information]]
match = { vendor_id = "8086", product_id = "154c", address = "0000:0a:00.0" }
extra = { "e.physical_network" = "physnet1" }
exclude = ["0000:0a:02.7"]
```
The whitelist may instead be `device_spec = ['<Nova JSON>', ...]` or the seed's one-liner
`pci_information = '[ {...}, {...} ]'`; one of the three, not several.

The host's CPUs, NUMA memory and disk are read from sysfs and `instances_path`
(`host.topology`); the ratios and reservations above turn them into the capacity the
controller counts VMs against (`pci.resources.HostResources.capacity`).
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from passthru.host.nodedev import discover_libvirt
from passthru.host.sysfs import discover_sysfs
from passthru.host.topology import disk_gb, format_cpulist, read_topology
from passthru.pci.device import BASE_ATTRS, PciDevice
from passthru.pci.errors import PassthruError, PciValueError
from passthru.pci.match import did_you_mean, tag_key
from passthru.pci.pool import DEFAULT_POOL_ATTRS
from passthru.pci.resources import HostResources
from passthru.pci.spec import (
    MATCH_ALIASES,
    Whitelist,
    parse_device_spec,
    parse_pci_information,
    parse_seed_oneliner,
)


class HostConfigError(PassthruError):
    """A host config that cannot be used; the message names the file, key and value."""


def _pool_attr(name: str) -> str:
    """A pool attribute: a base attribute (the seed's `device_id` is product_id), an extra
    tag, or `e.*` for all of them."""
    if name == "e.*":
        return name
    base = MATCH_ALIASES.get(name, name)
    if base in BASE_ATTRS:
        return base
    if name.startswith("e.") or name == "physical_network":
        return tag_key(name, what="pool attribute")
    raise PciValueError(
        f"pool attribute {name!r} is not exposed by devices; use one of "
        f"{', '.join(BASE_ATTRS)}, an extra tag such as 'e.group', or 'e.*' "
        f"({did_you_mean(name, BASE_ATTRS)})"
    )


class HostConfig(BaseModel):
    """One host's settings; `whitelist` is built from whichever spelling the file uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    controller: str = "http://127.0.0.1:8774"
    host: str = Field(default_factory=socket.gethostname, min_length=1)
    token: str | None = Field(default_factory=lambda: os.environ.get("PASSTHRU_TOKEN"))
    source: Literal["sysfs", "libvirt"] = "sysfs"
    sysfs_root: Path = Path("/sys")
    libvirt_uri: str = "qemu:///system"
    instances_path: Path = Path("/var/lib/passthru/instances")
    vf_applier: Literal["netlink", "simulated"] = "netlink"
    interval: float = Field(default=60, gt=0)
    order_interval: float = Field(default=2, gt=0)
    pool_attrs: tuple[str, ...] = DEFAULT_POOL_ATTRS
    pci_information: list[Any] | str | None = None
    device_spec: list[str] | None = None
    instances_path: Path = Path("/var/lib/passthru/instances")
    image_cache: Path = Path("/var/lib/passthru/images")
    domain_type: Literal["auto", "kvm", "qemu"] = "auto"
    bridge_mappings: dict[str, str] = Field(default_factory=dict)
    #: The network namespace libvirtd runs in, which holds the bridges and the VMs' taps;
    #: None for the agent's own (a libvirtd of the host's, as in production).
    libvirt_netns: str | None = Field(default=None, min_length=1, max_length=255)
    cpu_allocation_ratio: float = Field(default=4.0, gt=0)
    ram_allocation_ratio: float = Field(default=1.0, gt=0)
    disk_allocation_ratio: float = Field(default=1.0, gt=0)
    reserved_cpus: tuple[Annotated[int, Field(ge=0)], ...] = ()
    reserved_host_memory_mb: int = Field(default=512, ge=0)
    reserved_host_disk_gb: int = Field(default=0, ge=0)

    _whitelist: Whitelist = PrivateAttr()

    @field_validator("pci_information", mode="before")
    @classmethod
    def _whitelist_shape(cls, value: object) -> object:
        if value is None or isinstance(value, list | str):
            return value
        raise ValueError(
            "write [[pci_information]] tables, or the seed's one-liner as a string: "
            f"pci_information = '[ {{...}}, {{...}} ]' (got {value!r})"
        )

    @field_validator("pool_attrs")
    @classmethod
    def _known_pool_attrs(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_pool_attr(name) for name in names)

    @field_validator("bridge_mappings")
    @classmethod
    def _bridge_names(cls, mappings: dict[str, str]) -> dict[str, str]:
        for physnet, bridge in mappings.items():
            # A Linux interface name: at most 15 bytes, no '/', no whitespace.
            if not physnet or not bridge or len(bridge.encode()) > 15 or any(
                    c in bridge for c in "/ \t\n:"):
                raise ValueError(f"{physnet!r} = {bridge!r} does not map a physical network to "
                                 f"a bridge name (1 to 15 characters, no '/', ':' or spaces)")
        return mappings

    def model_post_init(self, context: Any, /) -> None:
        # The spec parsers' errors name and quote their entry already: pydantic reports
        # them from here without a key, and `_describe` passes them through as written.
        if self.pci_information is not None and self.device_spec is not None:
            raise HostConfigError(
                "give the whitelist once: either pci_information or device_spec, not both"
            )
        if isinstance(self.pci_information, str):
            specs = parse_seed_oneliner(self.pci_information)
        elif self.pci_information is not None:
            specs = parse_pci_information(self.pci_information)
        else:
            specs = parse_device_spec(self.device_spec or [])
        self._whitelist = Whitelist(specs)

    @property
    def whitelist(self) -> Whitelist:
        return self._whitelist


def _describe(error: dict[str, Any]) -> str:
    """One line per problem: the key, what is wrong, and the value when the message does not
    already quote it."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message  # a whitelist error: it names and quotes its entry itself
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = list(HostConfig.model_fields)
        return f"unknown key {key!r} ({did_you_mean(str(error['loc'][0]), known)})"
    if error["type"] == "value_error":
        return f"key {key!r}: {message}"
    return f"key {key!r}: {message} (got {error['input']!r})"


def host_config_from(data: dict[str, Any], origin: str = "host config") -> HostConfig:
    """Validate settings already read (e.g. from TOML); errors name `origin`."""
    try:
        return HostConfig(**data)
    except ValidationError as error:
        problems = "\n  ".join(_describe(e) for e in error.errors())  # type: ignore[arg-type]
        raise HostConfigError(f"{origin}: {problems}") from None
    except HostConfigError as error:
        raise HostConfigError(f"{origin}: {error}") from None


_PATH_KEYS = ("sysfs_root", "instances_path", "image_cache")


def load_host_config(path: Path) -> HostConfig:
    """Read and check a host config file; relative paths are taken from its folder."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise HostConfigError(f"cannot read host config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise HostConfigError(f"host config {path} is not valid TOML: {error}") from None
    for key in _PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            data[key] = str(path.parent / value)
    return host_config_from(data, f"host config {path}")


def scan(config: HostConfig) -> list[PciDevice]:
    """Every PCI function of the host, from the configured source, sorted by address."""
    if config.source == "libvirt":
        return discover_libvirt(config.libvirt_uri)
    return discover_sysfs(config.sysfs_root)


def resources(config: HostConfig) -> HostResources | None:
    """The host's CPUs, NUMA memory and disk with the config's ratios and reservations;
    None when sysfs shows no CPU topology (the controller then counts nothing)."""
    topology = read_topology(config.sysfs_root)
    if topology is None:
        return None
    known = {cpu.id for cpu in topology.cpus}
    unknown = sorted(set(config.reserved_cpus) - known)
    if unknown:
        raise HostConfigError(
            f"reserved_cpus names CPU {', '.join(map(str, unknown))}, which the host does not "
            f"have online (its CPUs: {format_cpulist(sorted(known))}); reserve only CPUs it has")
    return HostResources(
        cpus=topology.cpus, numa=topology.numa, disk_gb=disk_gb(config.instances_path),
        networks=tuple(sorted(config.bridge_mappings)),
        cpu_allocation_ratio=config.cpu_allocation_ratio,
        ram_allocation_ratio=config.ram_allocation_ratio,
        disk_allocation_ratio=config.disk_allocation_ratio,
        reserved_cpus=tuple(sorted(set(config.reserved_cpus))),
        reserved_host_memory_mb=config.reserved_host_memory_mb,
        reserved_host_disk_gb=config.reserved_host_disk_gb)


def offered(config: HostConfig) -> list[PciDevice]:
    """What the host offers: the devices it has that the whitelist takes, with their tags."""
    return config.whitelist.taken(scan(config))
