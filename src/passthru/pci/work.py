"""Work orders: what the controller asks a host agent to do, and what the agent answers.

Plain dataclasses over the core types, so that the controller can carry them over HTTP
(pydantic serialises dataclasses as they are) and the agent acts on them without
translating.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from passthru.errors import InvalidInputError
from passthru.pci.binding import Binding, NetworkSpec, PortSpec, VifType
from passthru.pci.device import PciDevice


def canonical_uuid(text: str, what: str = "server uuid") -> str:
    """A UUID in its canonical lower-case, dashed spelling."""
    try:
        return str(uuid.UUID(text))
    except (ValueError, TypeError, AttributeError):
        raise InvalidInputError(f"{what} {text!r} is not a UUID") from None


@dataclass(slots=True)
class AttachedDevice:
    """A device claimed for a server: for a flavor request alone, or for a port, which
    then comes with the network it is on."""

    device: PciDevice
    request_id: str
    port: PortSpec | None = None
    network: NetworkSpec | None = None

    def __post_init__(self) -> None:
        if (self.port is None) != (self.network is None):
            raise InvalidInputError(f"device {self.device.address} (request {self.request_id}): "
                                    f"a port needs the network it is on; give both or neither")


#: As much of a server's console log as an agent reads and sends, and the controller keeps:
#: a guest can write gigabytes to its console.
CONSOLE_TAIL = 64 * 1024


class ImagePart(StrEnum):
    """The files of an image: its disk, and for a direct-kernel-boot image (OpenStack's
    `kernel_id`/`ramdisk_id`) a kernel and an optional initrd."""

    DISK = "disk"
    KERNEL = "kernel"
    INITRD = "initrd"


@dataclass(slots=True)
class ImageFile:
    """One file of an image as the controller keeps it: the agent fetches it once per
    host and checks it against `sha256` before use."""

    part: ImagePart
    sha256: str
    size: int


#: The HTTP header an image file's SHA-256 travels in, both ways.
SHA256_HEADER = "X-Image-Sha256"
#: The HTTP header of an orders answer that carries the host's inventory generation, so
#: that an agent learns of a copy that moved on (a restore, another reporter) without
#: heart-beating for it.
GENERATION_HEADER = "X-Inventory-Generation"


@dataclass(slots=True)
class ImageRef:
    """The image a VM boots: its disk format (`qcow2` or `raw`), its files, and the kernel
    command line of a direct-kernel-boot image (the image property `os_command_line`)."""

    id: str
    name: str
    disk_format: str
    files: list[ImageFile] = field(default_factory=list)
    kernel_args: str | None = None

    def file(self, part: ImagePart) -> ImageFile | None:
        return next((f for f in self.files if f.part is ImagePart(part)), None)


@dataclass(slots=True)
class GuestSpec:
    """What makes the VM real: its image, its disk size (the flavor's; 0 is the image's
    own virtual size), and its cloud-init NoCloud seed (hostname, public keys by key name,
    user-data)."""

    image: ImageRef | None = None
    disk_gb: int = 0
    hostname: str = ""
    public_keys: dict[str, str] = field(default_factory=dict)
    user_data: str | None = None


@dataclass(slots=True)
class AttachedPort:
    """A normal port: no device; the host plugs it into the bridge of its network's
    physical network (`bridge_mappings` in the host config)."""

    port: PortSpec
    network: NetworkSpec


@dataclass(slots=True)
class SpawnOrder:
    """Run server `server_uuid` on this host with exactly `devices`, or leave nothing of it.

    `numa_node` is the node a NUMA-bound VM was placed on (its vCPUs and memory are pinned
    there); `pinned_cpus` are the host CPUs its dedicated vCPUs own, vCPU i on the i-th.
    """

    server_uuid: str
    name: str
    vcpus: int
    ram_mb: int
    devices: list[AttachedDevice] = field(default_factory=list)
    nics: list[AttachedPort] = field(default_factory=list)
    guest: GuestSpec = field(default_factory=GuestSpec)
    numa_node: int | None = None
    pinned_cpus: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server_uuid = canonical_uuid(self.server_uuid)


@dataclass(slots=True)
class DestroyOrder:
    """Remove server `server_uuid` from this host and put its VFs back as they were.

    `domain_xml` is the XML the server was started with, as the controller keeps it: it
    still names the VFs to reset when the domain itself is already gone (an agent that
    died between removing a domain and resetting its VFs)."""

    server_uuid: str
    name: str
    domain_xml: str | None = None

    def __post_init__(self) -> None:
        self.server_uuid = canonical_uuid(self.server_uuid)


@dataclass(slots=True)
class PortBinding:
    """A port as the host bound it: Neutron's `binding:vif_type` and `binding:profile`, and
    the VLAN put on its VF (None: untagged, or a profile or the switch decides)."""

    port_id: str
    vif_type: VifType
    profile: dict[str, str | bool]
    vlan: int | None

    @staticmethod
    def of(binding: Binding) -> PortBinding:
        return PortBinding(binding.port_id, binding.vif_type, binding.profile, binding.vlan)


@dataclass(slots=True)
class OrderResult:
    """How an order went. On failure `fault` names the step, the device and the reason, and
    everything the order had done on the host is undone."""

    server_uuid: str
    ok: bool
    fault: str | None = None
    bindings: list[PortBinding] = field(default_factory=list)
    domain_xml: str | None = None


@dataclass(slots=True)
class KnownServer:
    """A server the controller has placed on this host; `active` when it believes it runs."""

    server_uuid: str
    active: bool

    def __post_init__(self) -> None:
        self.server_uuid = canonical_uuid(self.server_uuid)


@dataclass(slots=True)
class OwnedDomain:
    """A libvirt domain passthru made for a server, with the host devices it holds."""

    server_uuid: str
    domain: str
    active: bool
    pci_addresses: list[str]
    macvtap_netdevs: list[str]


@dataclass(slots=True)
class ReconcileReport:
    """The host's domains set against the controller's servers after an agent restart.

    `kept` belong to known servers: their devices stay allocated. `orphans` belonged to
    servers the controller no longer has; they were destroyed, except those named in
    `orphan_faults` (server uuid → why), whose devices are still held. `missing` are
    servers the controller believes ACTIVE here that have no domain.
    """

    kept: list[OwnedDomain] = field(default_factory=list)
    orphans: list[OwnedDomain] = field(default_factory=list)
    orphan_faults: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


class PowerAction(StrEnum):
    """What `passthru stop|start|reboot [--hard]` asks of a server's domain."""

    STOP = "stop"
    START = "start"
    REBOOT = "reboot"
    HARD_REBOOT = "hard-reboot"


class PowerState(StrEnum):
    """Whether a server's domain runs, as the host's agent finds it each orders round."""

    RUNNING = "running"
    SHUTOFF = "shutoff"


@dataclass(slots=True)
class PowerOrder:
    """Change the power state of server `server_uuid`'s domain on this host."""

    server_uuid: str
    name: str
    action: PowerAction

    def __post_init__(self) -> None:
        self.server_uuid = canonical_uuid(self.server_uuid)
        self.action = PowerAction(self.action)


@dataclass(slots=True)
class Orders:
    """A host's work: destroys come first, so that devices a deleted server held are free
    on the host before a new server gets them. `running` are the servers the controller
    believes ACTIVE (or SHUTOFF) here, for reconciliation after an agent restart and for
    the power state the agent finds."""

    destroy: list[DestroyOrder] = field(default_factory=list)
    spawn: list[SpawnOrder] = field(default_factory=list)
    power: list[PowerOrder] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
