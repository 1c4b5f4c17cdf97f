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
interval = 60                       # seconds between re-scans (1 to 86400)
order_interval = 2                  # power-state checks; order polls of older controllers
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
allow_no_iommu = false              # true: offer devices on a host without an IOMMU (unsafe)

[[pci_information]]
match = { vendor_id = "8086", product_id = "154c", address = "0000:0a:00.0" }
extra = { "e.physical_network" = "physnet1" }
exclude = ["0000:0a:02.7"]
```
The whitelist may instead be `device_spec = ['<Nova JSON>', ...]` or the seed's one-liner
`pci_information = '[ {...}, {...} ]'`; one of the three, not several.

A config that cannot be used is refused with one line that names the file, the key and
what to write instead (`HostConfigError`): a file that is missing, not a regular file,
larger than `MAX_CONFIG_BYTES`, not UTF-8 or not TOML; values nested deeper than
`MAX_DEPTH` (tomllib and pydantic would recurse into them); wrong types, unknown keys,
intervals outside the ranges in `INTERVALS`, host names that are not host names.

Whatever the whitelist takes, a host offers nothing without an IOMMU (unless
`allow_no_iommu`), and never a device it runs on: its mounted disks' controllers, the NICs
of its routes and addresses (`host.preflight`).

The host's CPUs, NUMA memory and disk are read from sysfs and `instances_path`
(`host.topology`); the ratios and reservations above turn them into the capacity the
controller counts VMs against (`pci.resources.HostResources.capacity`).
"""

from __future__ import annotations

import os
import re
import reprlib
import socket
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from passthru.errors import InvalidInputError
from passthru.host.nodedev import discover_libvirt
from passthru.host.preflight import KERNEL_SYSFS, Preflight, check
from passthru.host.sysfs import discover_sysfs
from passthru.host.topology import disk_gb, format_cpulist, read_topology
from passthru.pci.device import PciDevice
from passthru.pci.match import did_you_mean
from passthru.pci.pool import DEFAULT_POOL_ATTRS, pool_attr
from passthru.pci.resources import HostResources
from passthru.pci.spec import (
    Decision,
    DeviceSpecError,
    Whitelist,
    parse_device_spec,
    parse_pci_information,
    parse_seed_oneliner,
)


class HostConfigError(InvalidInputError):
    """A host config that cannot be used; the message names the file, key and value."""


#: A host config is a few KiB: a bigger file is the wrong one, and is not read whole.
MAX_CONFIG_BYTES = 1 << 20
#: The deepest a config nests (a table, pci_information, an entry, match, an address
#: pattern is 5); the limit keeps tomllib's and pydantic's recursion far from Python's.
MAX_DEPTH = 8
#: Seconds: (least, most, what). Below the least the agent would spin on the host and the
#: controller; beyond the most (or inf/nan) it would never report or take orders again.
INTERVALS: dict[str, tuple[float, float, str]] = {
    "interval": (1.0, 86400.0, "re-scan every 1 s to 86400 s (a day)"),
    "order_interval": (0.05, 3600.0, "check power states (and poll an older controller "
                       "for orders) every 0.05 s to 3600 s (an hour)"),
}
#: How many problems one error line lists; the rest are counted.
_SHOWN_PROBLEMS = 3
#: One dot-separated label of a host name (RFC 1123, and '_' as many sites use it).
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_MAX_HOST = 255  # the controller's host names are String(255)
_MAX_PHYSNET = 255  # a network's physical_network is a 255-character name
_MAX_RATIO = 1000.0
_MAX_COUNT = 2**31 - 1  # the controller's Integer columns (32 bits on PostgreSQL)
_MAX_TOKEN = 4096
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 60
_QUOTE.maxlevel = 3


def _quote(value: object) -> str:
    """A value as an error line quotes it: repr, shortened (hostile values are long)."""
    return _QUOTE.repr(value)


class HostConfig(BaseModel):
    """One host's settings; `whitelist` is built from whichever spelling the file uses."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    controller: str = "http://127.0.0.1:8774"
    #: Validated also when it is this machine's hostname: the controller must take it.
    host: str = Field(default_factory=socket.gethostname, validate_default=True)
    token: str | None = Field(default_factory=lambda: os.environ.get("PASSTHRU_TOKEN"))
    source: Literal["sysfs", "libvirt"] = "sysfs"
    sysfs_root: Path = Path("/sys")
    libvirt_uri: str = "qemu:///system"
    instances_path: Path = Path("/var/lib/passthru/instances")
    vf_applier: Literal["netlink", "simulated"] = "netlink"
    interval: float = Field(default=60, allow_inf_nan=True)  # refused below, with the range
    order_interval: float = Field(default=2, allow_inf_nan=True)
    pool_attrs: tuple[str, ...] = DEFAULT_POOL_ATTRS
    pci_information: list[Any] | str | None = None
    device_spec: list[str] | None = None
    image_cache: Path = Path("/var/lib/passthru/images")
    domain_type: Literal["auto", "kvm", "qemu"] = "auto"
    bridge_mappings: dict[str, str] = Field(default_factory=dict)
    #: The network namespace libvirtd runs in, which holds the bridges and the VMs' taps;
    #: None for the agent's own (a libvirtd of the host's, as in production).
    libvirt_netns: str | None = Field(default=None, min_length=1, max_length=255)
    # Bounded so that the capacity they make fits the controller's integer columns.
    cpu_allocation_ratio: float = Field(default=4.0, gt=0, le=_MAX_RATIO)
    ram_allocation_ratio: float = Field(default=1.0, gt=0, le=_MAX_RATIO)
    disk_allocation_ratio: float = Field(default=1.0, gt=0, le=_MAX_RATIO)
    reserved_cpus: tuple[Annotated[int, Field(ge=0, le=_MAX_COUNT)], ...] = ()
    reserved_host_memory_mb: int = Field(default=512, ge=0, le=_MAX_COUNT)
    reserved_host_disk_gb: int = Field(default=0, ge=0, le=_MAX_COUNT)
    allow_no_iommu: StrictBool = False

    _whitelist: Whitelist = PrivateAttr()

    @field_validator("pci_information", mode="before")
    @classmethod
    def _whitelist_shape(cls, value: object) -> object:
        if value is None or isinstance(value, list | str):
            return value
        raise ValueError(
            "write [[pci_information]] tables, or the seed's one-liner as a string: "
            f"pci_information = '[ {{...}}, {{...}} ]' (got {_quote(value)})"
        )

    @field_validator("controller")
    @classmethod
    def _controller_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{_quote(url)} is not the controller's URL; write "
                             "controller = 'http://HOST:8774'")
        return url

    @field_validator("host")
    @classmethod
    def _host_name(cls, name: str) -> str:
        if len(name) > _MAX_HOST:
            raise ValueError(f"the host name is {len(name)} characters long ({_quote(name)}); "
                             f"the controller takes at most {_MAX_HOST}")
        if not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
            raise ValueError(f"{_quote(name)} is not a host name: write dot-separated labels "
                             "of 1 to 63 letters, digits, '-' or '_' (no '-' at either end), "
                             "e.g. host = 'compute-1'")
        return name

    @field_validator("token")
    @classmethod
    def _header_safe_token(cls, token: str | None) -> str | None:
        # It is sent in an HTTP header: a newline or a non-ASCII byte would break the request.
        if token is not None and not (
                0 < len(token) <= _MAX_TOKEN and all("!" <= c <= "~" for c in token)):
            raise ValueError(f"{_quote(token)} is not an agent token (printable ASCII without "
                             "spaces); paste the one passthru host-token HOST printed")
        return token

    @field_validator("sysfs_root", "instances_path", "image_cache")
    @classmethod
    def _openable_path(cls, path: Path) -> Path:
        if "\0" in str(path):
            raise ValueError(f"{_quote(str(path))} holds a NUL character, which no path can; "
                             "write the directory's path")
        return path

    @field_validator("libvirt_netns")
    @classmethod
    def _netns_name(cls, name: str | None) -> str | None:
        # A name under /run/netns: anything that leaves that directory is not one.
        if name is not None and (name in (".", "..") or any(c in name for c in "/\0")):
            raise ValueError(f"{_quote(name)} is not a network namespace name (no '/'; see "
                             "ip netns list), e.g. libvirt_netns = 'vms'")
        return name

    @field_validator("interval", "order_interval")
    @classmethod
    def _sane_interval(cls, seconds: float, info: ValidationInfo) -> float:
        least, most, rule = INTERVALS[str(info.field_name)]
        if not least <= seconds <= most:  # also refuses nan, which compares false
            raise ValueError(f"{seconds:g} s is out of range; {rule}")
        return seconds

    @field_validator("pool_attrs")
    @classmethod
    def _known_pool_attrs(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(pool_attr(name) for name in names)

    @field_validator("bridge_mappings")
    @classmethod
    def _bridge_names(cls, mappings: dict[str, str]) -> dict[str, str]:
        for physnet, bridge in mappings.items():
            # As a network's physical_network: 1 to 255 characters, no blanks around.
            if not physnet.strip() or physnet != physnet.strip() or len(physnet) > _MAX_PHYSNET:
                raise ValueError(f"{_quote(physnet)} = {_quote(bridge)} names no physical "
                                 f"network: write its name as the networks give it (1 to "
                                 f"{_MAX_PHYSNET} characters, no blanks around), e.g. "
                                 "{ physnet1 = 'br-prov' }")
            # A Linux interface name: at most 15 bytes, no '/', no whitespace.
            if not bridge or len(bridge.encode()) > 15 or bridge in (".", "..") or any(
                    c in bridge for c in "/:") or any(c.isspace() for c in bridge):
                raise ValueError(f"{_quote(physnet)} = {_quote(bridge)} does not map a physical "
                                 f"network to a bridge name (1 to 15 characters, no '/', ':' "
                                 f"or spaces)")
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
    """One problem: the key, what is wrong, and the value when the message does not
    already quote it."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, DeviceSpecError):  # names its entry; quoted on the same line
        return f"{cause.origin}: {cause.problem} (in {_QUOTE.repr(cause.source)[1:-1]})"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message  # a whitelist error: it names and quotes its entry itself
    key = _quote(".".join(str(part) for part in error["loc"]))
    if error["type"] == "extra_forbidden":
        known = list(HostConfig.model_fields)
        return f"unknown key {key} ({did_you_mean(str(error['loc'][0])[:100], known)})"
    if error["type"] == "value_error":
        return f"key {key}: {message}"
    return f"key {key}: {message} (got {_quote(error['input'])})"


def _too_deep(data: dict[str, Any]) -> str | None:
    """The top-level key whose value nests deeper than MAX_DEPTH, found without recursing."""
    stack: list[tuple[str, object, int]] = [(key, value, 1) for key, value in data.items()]
    while stack:
        key, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return key
        if isinstance(value, dict):
            stack.extend((key, item, depth + 1) for item in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((key, item, depth + 1) for item in value)
    return None


def host_config_from(data: dict[str, Any], origin: str = "host config") -> HostConfig:
    """Validate settings already read (e.g. from TOML); errors name `origin`, on one line."""
    deep = _too_deep(data)
    if deep is not None:
        raise HostConfigError(f"{origin}: key {_quote(deep)} nests arrays or tables more than "
                              f"{MAX_DEPTH} levels deep, which no setting needs; write it as "
                              "the host config docs show")
    try:
        return HostConfig(**data)
    except ValidationError as error:
        problems = [_describe(e) for e in error.errors()]  # type: ignore[arg-type]
        line = "; ".join(problems[:_SHOWN_PROBLEMS])
        if len(problems) > _SHOWN_PROBLEMS:
            line += f" (and {len(problems) - _SHOWN_PROBLEMS} more problems)"
        raise HostConfigError(f"{origin}: {line}") from None
    except HostConfigError as error:
        raise HostConfigError(f"{origin}: {error}") from None


_PATH_KEYS = ("sysfs_root", "instances_path", "image_cache")


def _read_text(path: Path) -> str:
    """The file's text; only a regular file is read (a FIFO would block, a device never end),
    and no more of it than a host config can be."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise HostConfigError(f"host config {path} is a directory; give the TOML file "
                                  "itself, e.g. --config /etc/passthru/host.toml")
        if not stat.S_ISREG(mode):
            raise HostConfigError(f"host config {path} is not a regular file; give a TOML file")
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise HostConfigError(f"cannot read host config {path}: {error.strerror}; check the "
                              "path and that this user may read it") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise HostConfigError(f"host config {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB, "
                              "far more than a host config's few KiB; is it the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - raw.rfind(b"\n", 0, error.start)
        raise HostConfigError(
            f"host config {path} is not UTF-8 text (byte 0x{raw[error.start]:02x} at line "
            f"{line}, column {column}); TOML is UTF-8: save the file as UTF-8") from None


def load_host_config(path: Path) -> HostConfig:
    """Read and check a host config file; relative paths are taken from its folder."""
    try:
        data = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as error:
        raise HostConfigError(f"host config {path} is not valid TOML: {error}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise HostConfigError(f"host config {path} nests arrays or inline tables too deeply "
                              f"to read; a host config needs at most {MAX_DEPTH} levels") from None
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


def decide(config: HostConfig) -> tuple[Preflight, list[Decision]]:
    """The host's preflight, and a decision for each of its devices: taken by the whitelist
    and not refused by the preflight, or why not."""
    devices = scan(config)
    preflight = check(devices, config.allow_no_iommu, own=_this_machine(config))
    return preflight, preflight.review(config.whitelist.apply(devices))


def _this_machine(config: HostConfig) -> bool:
    """Whether the devices are this machine's, not a simulated host's."""
    if config.source == "libvirt":
        return not config.libvirt_uri.startswith("test:")
    return config.sysfs_root.resolve() == KERNEL_SYSFS


def offered(config: HostConfig) -> list[PciDevice]:
    """What the host offers: the devices it has that the whitelist takes and the preflight
    lets go, with their tags."""
    return [decision.device for decision in decide(config)[1] if decision.taken]
