"""Spawn and destroy a server's libvirt domain with its passthrough devices, all or nothing,
and change its power state.

A spawn first checks each claimed device against the host's sysfs: the same ids, class and
IOMMU group as the claim (another card in that slot is refused), and a `managed: "no"`
device already on vfio-pci (libvirt leaves its driver alone). It then binds the ports,
sets up each port's VF (MAC, VLAN, spoof checking, trust, rate), and defines and starts
the domain. When a step fails, everything done before it is undone in reverse order, so
the controller can free the claim knowing that nothing on the host still holds a device.
A destroy reads the devices from the domain's own XML, so it works for domains an earlier
agent process started.

On a host set up for real guests (`GuestHost`) a spawn also makes the VM's files first:
the image's files in the host's cache, the VM's disk overlay and NoCloud seed in its own
instance directory; it plugs normal ports into the bridges of their physical networks,
and pins a NUMA-placed VM to its node. A destroy removes the instance directory, whose
path follows from the server's uuid alone. Power orders stop, start and reboot a domain;
each start (a spawn's too) tags the VM's taps before its vCPUs run.

The domain is named after the server (`passthru-<uuid>`) so that reconciliation maps
domains to servers; the server's own name goes into the domain's `<title>`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from passthru.errors import ConflictError, HostError, PassthruError
from passthru.host.bridge import BridgePorts, NetlinkBridgePorts, bridge_for
from passthru.host.config import HostConfig
from passthru.host.domain_type import resolve_domain_type
from passthru.host.domain_xml import (
    BridgeNic,
    DomainDevices,
    DomainSpec,
    GuestDisks,
    NumaPlacement,
    build_domain_xml,
    read_bridge_taps,
    read_domain_devices,
    read_port_vlans,
)
from passthru.host.image_cache import ImageCache, ImageError, ImageFetch
from passthru.host.instance import Instances
from passthru.host.libvirt_driver import DomainNotFoundError, LibvirtDriver
from passthru.host.numa import node_cpus
from passthru.host.vf import (
    VfConfig,
    VfConfigError,
    apply_vf_config,
    reset_vf,
    vf_config_for,
    vf_index,
)
from passthru.pci.binding import Binding, NetworkSpec, PortSpec, bind_port
from passthru.pci.device import IDENTITY, DevType, PciDevice
from passthru.pci.work import (
    DestroyOrder,
    GuestSpec,
    ImagePart,
    OrderResult,
    PortBinding,
    PowerAction,
    PowerOrder,
    PowerState,
    SpawnOrder,
)

DOMAIN_PREFIX = "passthru-"

#: The host's PCI functions as they are now (the agent's scan, before the whitelist).
HostDevices = Callable[[], Sequence[PciDevice]]


def domain_name(server_uuid: str) -> str:
    return f"{DOMAIN_PREFIX}{server_uuid}"


@dataclass(frozen=True, slots=True)
class VfSlot:
    """A VF as netlink reaches it: through its PF's netdev, by its number under that PF."""

    address: str
    pf_netdev: str
    index: int


class VfApplier(Protocol):
    """Sets and resets VFs; `NetlinkVfApplier` does it through the kernel."""

    def apply(self, vf: VfSlot, config: VfConfig) -> None: ...

    def reset(self, vf: VfSlot) -> None: ...


@dataclass(frozen=True, slots=True)
class NetlinkVfApplier:
    """VF settings through netlink; `netns` names the network namespace that holds the PF
    netdevs (None: the agent's own)."""

    netns: str | None = None

    def apply(self, vf: VfSlot, config: VfConfig) -> None:
        apply_vf_config(vf.pf_netdev, vf.index, config, netns=self.netns)

    def reset(self, vf: VfSlot) -> None:
        reset_vf(vf.pf_netdev, vf.index, netns=self.netns)


#: The kernel command line of a direct-kernel-boot image that names none.
DEFAULT_KERNEL_ARGS = "root=/dev/vda console=ttyS0"


@dataclass(frozen=True, slots=True)
class GuestHost:
    """What a host needs to run real guests: where VMs' files go, the image cache, which
    bridge each physical network is on, how taps are tagged, the domain type it runs
    (`kvm` or `qemu`, resolved from the host config's `domain_type`), and how long a guest
    gets to shut down before it is powered off."""

    instances: Instances
    images: ImageCache
    bridge_mappings: Mapping[str, str]
    bridges: BridgePorts
    domain_type: str = "kvm"
    shutdown_timeout: float = 60.0

    @staticmethod
    def from_config(config: HostConfig, driver: LibvirtDriver, fetch: ImageFetch) -> GuestHost:
        """The host config's guest settings; `fetch` is the controller link's image
        download."""
        return GuestHost(Instances(config.instances_path),
                         ImageCache(config.image_cache, fetch), dict(config.bridge_mappings),
                         NetlinkBridgePorts(config.libvirt_netns),
                         resolve_domain_type(config.domain_type, driver))


class _StepError(HostError):
    """A step of an order failed; the message names the step, its subject and the reason."""


def _reason(error: Exception) -> str:
    """An error as a fault: our own errors and the system's speak for themselves; anything
    else (a library's own exception, a bug) is named by its type too."""
    if isinstance(error, (PassthruError, OSError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


@contextmanager
def _step(step: str, subject: str) -> Iterator[None]:
    # Any exception: whatever a step raises must end as the order's fault, after the undo.
    try:
        yield
    except _StepError:
        raise
    except Exception as error:
        raise _StepError(f"{step} failed for {subject}: {_reason(error)}") from error


@dataclass
class _Rollback:
    """What to undo, most recent last."""

    _undo: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def push(self, what: str, action: Callable[[], object]) -> None:
        self._undo.append((what, action))

    def run(self) -> list[str]:
        """Undo everything, newest first; one failed undo does not stop the others.
        Returns what could not be undone, and why."""
        problems = []
        for what, action in reversed(self._undo):
            try:
                action()
            except Exception as error:
                problems.append(f"{what}: {_reason(error)}")
        self._undo.clear()
        return problems


class DomainNotRunningError(ConflictError):
    """A reboot of a domain that is shut off."""


def _hostname(order: SpawnOrder, guest: GuestSpec) -> str:
    return guest.hostname or order.name


#: The driver a `managed: "no"` device must already be bound to: libvirt will not bind it.
VFIO_DRIVER = "vfio-pci"


def _checked(claimed: PciDevice, inventory: Mapping[str, PciDevice]) -> PciDevice:
    """The host's function at the claimed device's address, refused unless it is the one
    claimed. A value the claim lacks (an older agent reported none) is not compared."""
    found = inventory.get(claimed.address)
    if found is None:
        raise _StepError(f"device {claimed.address} is not on this host any more; refusing "
                         "to start the server without it")
    changed = [f"{key} {was} is now {now}" for key in IDENTITY
               if (was := getattr(claimed, key)) not in (None, "")
               and was != (now := getattr(found, key))]
    if changed:
        raise _StepError(f"device {claimed.address} is not the one claimed "
                         f"({'; '.join(changed)}); refusing to attach it: check what was "
                         "changed in that slot")
    return found


def _unmanaged(claimed: PciDevice, found: PciDevice) -> bool:
    """Whether the device is Nova's `managed: "no"`, checked to be on vfio-pci already."""
    if claimed.tags.get("e.managed") != "false":
        return False
    if found.driver != VFIO_DRIVER:
        raise _StepError(
            f"device {claimed.address} is tagged managed = no, so libvirt leaves its driver "
            f"alone, but it is bound to {found.driver or 'no driver'}, not {VFIO_DRIVER}; "
            f"bind it to {VFIO_DRIVER} (e.g. driverctl set-override {claimed.address} "
            f"{VFIO_DRIVER}) or drop managed = no from its pci_information entry")
    return True


def _devices_of(name: str, order: SpawnOrder) -> str:
    addresses = ", ".join(attached.device.address for attached in order.devices)
    return f"domain {name} (devices {addresses or 'none'})"


class Attacher:
    """Runs spawn, destroy and power orders on one host.

    `sysfs_root` is where the PFs' `virtfnN` links are read to number the VFs, and the
    NUMA nodes' CPUs; `host_devices` gives the host's functions, to find each VF's PF and
    its netdev. Without `guests` the host runs VMs of devices alone (no disk, no normal
    ports), as a simulated host does.
    """

    def __init__(self, driver: LibvirtDriver, vf: VfApplier, sysfs_root: Path | str,
                 host_devices: HostDevices, guests: GuestHost | None = None) -> None:
        self.driver = driver
        self.vf = vf
        self.sysfs_root = Path(sysfs_root)
        self.host_devices = host_devices
        self.guests = guests

    def spawn(self, order: SpawnOrder) -> OrderResult:
        """Spawn the server, or undo everything and say why. A domain the server has here
        already is the leftover of an earlier attempt whose answer never reached the
        controller (it would not ask again otherwise): it is destroyed first, so that the
        spawn starts afresh and nothing of the old attempt keeps a device. A domain of that
        name with another UUID is not the server's: it is left alone, and libvirt refuses
        the define."""
        if (failed := self._remove_leftover(order)) is not None:
            return failed
        rollback = _Rollback()
        try:
            bindings, xml = self._spawn(order, rollback)
        except Exception as failure:
            fault = str(failure) if isinstance(failure, _StepError) else (
                f"spawning server {order.server_uuid} failed: {_reason(failure)}")
            if problems := rollback.run():
                fault += "; undoing the spawn also failed: " + "; ".join(problems)
            return OrderResult(order.server_uuid, ok=False, fault=fault)
        except BaseException:
            rollback.run()
            raise
        return OrderResult(order.server_uuid, ok=True,
                           bindings=[PortBinding.of(binding) for binding in bindings],
                           domain_xml=xml)

    def _remove_leftover(self, order: SpawnOrder) -> OrderResult | None:
        """Remove what an earlier attempt at `order` left here; the failure if that fails."""
        name = domain_name(order.server_uuid)
        try:
            with _step("read domain", name):
                try:
                    ours = self.driver.uuid(name) == order.server_uuid
                except DomainNotFoundError:
                    ours = False
        except _StepError as failure:
            return OrderResult(order.server_uuid, ok=False, fault=str(failure))
        if ours:
            undone = self.destroy(DestroyOrder(order.server_uuid, order.name))
            problems = [undone.fault or "destroy failed"] if not undone.ok else []
        else:
            problems = self._remove_files(order.server_uuid)
        if problems:
            return OrderResult(order.server_uuid, ok=False,
                               fault="removing what an earlier attempt left failed: "
                                     + "; ".join(problems))
        return None

    def destroy(self, order: DestroyOrder) -> OrderResult:
        """Stop and undefine the server's domain, then reset the network VFs it held. When
        the domain is already gone, the VFs the order's XML names are reset (if it has
        one) and the destroy is done."""
        name = domain_name(order.server_uuid)
        try:
            with _step("read domain", name):
                try:
                    xml: str | None = self.driver.xml(name)
                except DomainNotFoundError:
                    xml = None
                known = xml or order.domain_xml
                if known is None:
                    problems = self._remove_files(order.server_uuid)
                    return OrderResult(order.server_uuid, ok=not problems,
                                       fault="; ".join(problems) or None)
                devices = read_domain_devices(known)
            if xml is not None:
                with _step("remove domain", name):
                    self._remove_domain(name)
            with _step("read host devices", "the VFs to reset"):
                inventory = self._inventory()
        except _StepError as failure:
            return OrderResult(order.server_uuid, ok=False, fault=str(failure))
        problems = self._reset_vfs(devices, inventory)
        problems += self._remove_files(order.server_uuid)
        if problems:
            fault = f"domain {name} is gone, but " + "; ".join(problems)
            return OrderResult(order.server_uuid, ok=False, fault=fault)
        return OrderResult(order.server_uuid, ok=True)

    def power(self, order: PowerOrder) -> OrderResult:
        """Stop (gracefully, powered off after the host's shutdown timeout), start, reboot
        (ACPI) or hard-reboot (power off and start) the server's domain. Stopping a stopped
        domain or starting a running one is done already."""
        name = domain_name(order.server_uuid)
        try:
            with _step(str(order.action), f"domain {name}"):
                running = self.driver.state(name) is PowerState.RUNNING
                if order.action is PowerAction.STOP:
                    self.driver.shutdown(name, self._shutdown_timeout())
                elif order.action is PowerAction.START:
                    if not running:
                        self._boot(name)
                elif order.action is PowerAction.HARD_REBOOT:
                    # As Nova's: from any state, the domain ends up running afresh.
                    self.driver.stop(name)
                    self._boot(name)
                elif not running:
                    raise DomainNotRunningError(f"domain {name} is shut off; start it "
                                                f"instead of rebooting it")
                else:
                    self.driver.reboot(name)
        except _StepError as failure:
            return OrderResult(order.server_uuid, ok=False, fault=str(failure))
        return OrderResult(order.server_uuid, ok=True)

    def power_state(self, server_uuid: str) -> PowerState | None:
        """Whether the server's domain runs; None when it has none here."""
        try:
            return self.driver.state(domain_name(server_uuid))
        except DomainNotFoundError:
            return None

    def _shutdown_timeout(self) -> float:
        return self.guests.shutdown_timeout if self.guests is not None else 0.0

    def _spawn(self, order: SpawnOrder, rollback: _Rollback) -> tuple[list[Binding], str]:
        name = domain_name(order.server_uuid)
        # Read once: the checks and the VFs' netlink slots both look the devices up in it.
        with _step("check devices", _devices_of(name, order)):
            inventory = self._inventory() if order.devices else {}
            unmanaged = frozenset(
                attached.device.address for attached in order.devices
                if _unmanaged(attached.device, _checked(attached.device, inventory)))
        bindings = [self._bind(attached.port, attached.network, attached.device)
                    for attached in order.devices
                    if attached.port is not None and attached.network is not None]
        hostdevs = tuple(attached.device.address for attached in order.devices
                         if attached.port is None)
        nics = self._bridge_nics(order)
        numa = self._numa(order)
        disks = self._guest_files(order, rollback)
        domain_type = self.guests.domain_type if self.guests is not None else "kvm"
        with _step("build domain XML", _devices_of(name, order)):
            xml = build_domain_xml(DomainSpec(name, order.server_uuid, order.ram_mb,
                                              order.vcpus, hostdevs, tuple(bindings),
                                              unmanaged=unmanaged,
                                              domain_type=domain_type, title=order.name,
                                              guest=disks, nics=nics, numa=numa))
        self._configure_vfs(bindings, inventory, rollback)
        with _step("define domain", _devices_of(name, order)):
            self.driver.define(xml)
        # Undone even when start fails half-way: stopping a domain that is not running
        # changes nothing.
        rollback.push(f"remove domain {name}", functools.partial(self._remove_domain, name))
        with _step("start domain", _devices_of(name, order)):
            self._boot(name)
        return bindings, xml

    def _boot(self, name: str) -> None:
        """Start the domain; with VLAN taps, paused until its taps are tagged."""
        tagged = bool(read_port_vlans(self.driver.xml(name)))
        if tagged and self.guests is None:
            raise _StepError(f"domain {name} has VLAN ports, but this host is not set up to "
                             f"tag bridge ports; run it with a host config")
        self.driver.start(name, paused=tagged)
        if not tagged or self.guests is None:
            return
        try:
            for tap in read_bridge_taps(self.driver.xml(name)):
                if tap.vlan is not None:
                    self.guests.bridges.tag(tap.tap, tap.vlan)
        except PassthruError:
            self.driver.stop(name)  # never left paused, holding its devices, half-wired
            raise
        self.driver.resume(name)

    def _need_guests(self, what: str) -> GuestHost:
        if self.guests is None:
            raise _StepError(f"{what}: this host is not set up for real guests (no image "
                             f"cache, instances path or bridges); run it with a host config")
        return self.guests

    def _bridge_nics(self, order: SpawnOrder) -> tuple[BridgeNic, ...]:
        if not order.nics:
            return ()
        guests = self._need_guests("plug normal ports")
        nics = []
        for attached in order.nics:
            port, network = attached.port, attached.network
            with _step("plug port", f"port {port.port_id} on network {network.name}"):
                bridge = bridge_for(guests.bridge_mappings, network.physical_network,
                                    port.port_id)
                guests.bridges.check(bridge, tagged=network.segmentation_id is not None)
            nics.append(BridgeNic(port.port_id, port.mac, bridge, network.segmentation_id))
        return tuple(nics)

    def _numa(self, order: SpawnOrder) -> NumaPlacement | None:
        if order.numa_node is None:
            return None
        with _step("pin to NUMA node", f"server {order.server_uuid}"):
            return NumaPlacement(order.numa_node, node_cpus(self.sysfs_root, order.numa_node),
                                 tuple(order.pinned_cpus))

    def _guest_files(self, order: SpawnOrder, rollback: _Rollback) -> GuestDisks | None:
        guest = order.guest
        image = guest.image
        if image is None:
            return None
        guests = self._need_guests(f"boot image {image.name}")
        where = f"image {image.name} ({image.id})"
        with _step("fetch image", where):
            base = guests.images.get(image, ImagePart.DISK)
            if base is None:
                raise ImageError(f"{where} has no disk file; upload its disk to the "
                                 f"controller before booting it")
            kernel = guests.images.get(image, ImagePart.KERNEL)
            initrd = guests.images.get(image, ImagePart.INITRD) if kernel else None
        with _step("make VM files", f"server {order.server_uuid}"):
            files = guests.instances.create(order.server_uuid)
            rollback.push(f"remove {files.directory}",
                          functools.partial(guests.instances.remove, order.server_uuid))
            guests.instances.create_disk(files, base, image.disk_format, guest.disk_gb)
            guests.instances.create_seed(files, order.server_uuid, _hostname(order, guest),
                                         guest.public_keys, guest.user_data)
        cmdline = (image.kernel_args or DEFAULT_KERNEL_ARGS) if kernel else None
        return GuestDisks(files.disk, "qcow2", kernel, initrd, cmdline, files.seed,
                          files.console_log)

    def _remove_files(self, server_uuid: str) -> list[str]:
        if self.guests is None:
            return []
        try:
            self.guests.instances.remove(server_uuid)
        except OSError as error:
            return [f"removing the files of server {server_uuid} failed: {error}"]
        return []

    @staticmethod
    def _bind(port: PortSpec, network: NetworkSpec, device: PciDevice) -> Binding:
        with _step("bind port", f"port {port.port_id} on {device.address}"):
            return bind_port(port, network, device)

    def _configure_vfs(self, bindings: list[Binding], inventory: Mapping[str, PciDevice],
                       rollback: _Rollback) -> None:
        with _step("configure VFs", "the ports' VF settings"):
            wanted = [(binding, config) for binding in bindings
                      if (config := vf_config_for(binding)) is not None]
        for binding, config in wanted:
            address = str(binding.pci_slot)
            with _step("configure VF", f"port {binding.port_id} on VF {address}"):
                slot = self._vf_slot(address, inventory)
                if slot is None:
                    raise VfConfigError(f"{address} is not a VF of a PF with a netdev among "
                                        f"this host's devices; the VFs may have changed "
                                        f"since discovery")
                # Pushed before applying: a VF the kernel refused half-way is reset too.
                rollback.push(f"reset VF {address}", functools.partial(self.vf.reset, slot))
                self.vf.apply(slot, config)

    def _inventory(self) -> dict[str, PciDevice]:
        return {device.address: device for device in self.host_devices()}

    def _vf_slot(self, address: str, inventory: Mapping[str, PciDevice]) -> VfSlot | None:
        """The VF at `address` as netlink reaches it; None for anything that is not a VF
        of a PF with a netdev (a GPU, a whole PF, a QuickAssist VF)."""
        device = inventory.get(address)
        if device is None or device.dev_type is not DevType.VF or device.parent_addr is None:
            return None
        pf = inventory.get(device.parent_addr)
        if pf is None or pf.netdev is None:
            return None
        return VfSlot(address, pf.netdev, vf_index(self.sysfs_root, pf.address, address))

    def _remove_domain(self, name: str) -> None:
        try:
            self.driver.stop(name)
            self.driver.undefine(name)
        except DomainNotFoundError:
            pass  # gone already (a transient domain vanishes once stopped)

    def _reset_vfs(self, devices: DomainDevices,
                   inventory: Mapping[str, PciDevice]) -> list[str]:
        """Reset every network VF the domain held, by PCI address or by the macvtap's VF
        netdev; flavor VFs of NICs included, as their last user may have set them up.
        Returns what could not be reset."""
        by_netdev = {device.netdev: address for address, device in inventory.items()
                     if device.netdev is not None}
        problems = [f"the VF under macvtap netdev {netdev} is not among this host's devices "
                    f"and was not reset" for netdev in devices.macvtap_netdevs
                    if netdev not in by_netdev]
        held = [*devices.pci_addresses,
                *(by_netdev[netdev] for netdev in devices.macvtap_netdevs if netdev in by_netdev)]
        for address in held:
            try:
                slot = self._vf_slot(address, inventory)
                if slot is not None:
                    self.vf.reset(slot)
            except Exception as error:
                problems.append(f"reset VF {address} failed: {_reason(error)}")
        return problems
