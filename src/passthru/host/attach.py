"""Spawn and destroy a server's libvirt domain with its passthrough devices, all or nothing,
and change its power state.

A spawn binds the ports, sets up each port's VF (MAC, VLAN, spoof checking, trust, rate),
then defines and starts the domain. When a step fails, everything done before it is undone
in reverse order, so the controller can free the claim knowing that nothing on the host
still holds a device. A destroy reads the devices from the domain's own XML, so it works
for domains an earlier agent process started.

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

from passthru.host.domain_xml import (
    DomainDevices,
    DomainSpec,
    build_domain_xml,
    read_domain_devices,
)
from passthru.host.libvirt_driver import DomainNotFoundError, LibvirtDriver
from passthru.host.vf import (
    VfConfig,
    VfConfigError,
    apply_vf_config,
    reset_vf,
    vf_config_for,
    vf_index,
)
from passthru.pci.binding import Binding, NetworkSpec, PortSpec, bind_port
from passthru.pci.device import DevType, PciDevice
from passthru.pci.errors import PassthruError
from passthru.pci.work import (
    DestroyOrder,
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


class _StepError(Exception):
    """A step of an order failed; the message names the step, its subject and the reason."""


@contextmanager
def _step(step: str, subject: str) -> Iterator[None]:
    try:
        yield
    except (PassthruError, OSError) as error:
        raise _StepError(f"{step} failed for {subject}: {error}") from error


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
            except (PassthruError, OSError) as error:
                problems.append(f"{what}: {error}")
        self._undo.clear()
        return problems


def _devices_of(name: str, order: SpawnOrder) -> str:
    addresses = ", ".join(attached.device.address for attached in order.devices)
    return f"domain {name} (devices {addresses or 'none'})"


class Attacher:
    """Runs spawn and destroy orders on one host.

    `sysfs_root` is where the PFs' `virtfnN` links are read to number the VFs;
    `host_devices` gives the host's functions, to find each VF's PF and its netdev.
    """

    def __init__(self, driver: LibvirtDriver, vf: VfApplier, sysfs_root: Path | str,
                 host_devices: HostDevices, shutdown_timeout: float = 60.0) -> None:
        self.driver = driver
        self.vf = vf
        self.sysfs_root = Path(sysfs_root)
        self.host_devices = host_devices
        #: How long a stop waits for the guest to shut down before powering it off.
        self.shutdown_timeout = shutdown_timeout

    def power(self, order: PowerOrder) -> OrderResult:
        """Stop, start or reboot the server's domain. Its devices stay with it throughout
        (a stopped server keeps what it holds, as in Nova), so nothing is undone."""
        name = domain_name(order.server_uuid)
        actions: dict[PowerAction, Callable[[], object]] = {
            PowerAction.STOP: lambda: self.driver.shutdown(name, self.shutdown_timeout),
            PowerAction.START: lambda: self._power_on(name),
            PowerAction.REBOOT: lambda: self.driver.reboot(name),
            PowerAction.HARD_REBOOT: lambda: self.driver.reset(name),
        }
        try:
            with _step(str(order.action), f"domain {name}"):
                actions[order.action]()
        except _StepError as failure:
            return OrderResult(order.server_uuid, ok=False, fault=str(failure))
        return OrderResult(order.server_uuid, ok=True)

    def _power_on(self, name: str) -> None:
        # A start asked again (its answer was lost) finds the domain running: done.
        if self.driver.state(name) is PowerState.SHUTOFF:
            self.driver.start(name)

    def power_state(self, server_uuid: str) -> PowerState | None:
        """Whether the server's domain runs; None when it has none here."""
        try:
            return self.driver.state(domain_name(server_uuid))
        except DomainNotFoundError:
            return None

    def spawn(self, order: SpawnOrder) -> OrderResult:
        rollback = _Rollback()
        try:
            bindings, xml = self._spawn(order, rollback)
        except _StepError as failure:
            fault = str(failure)
            if problems := rollback.run():
                fault += "; undoing the spawn also failed: " + "; ".join(problems)
            return OrderResult(order.server_uuid, ok=False, fault=fault)
        except BaseException:
            rollback.run()
            raise
        return OrderResult(order.server_uuid, ok=True,
                           bindings=[PortBinding.of(binding) for binding in bindings],
                           domain_xml=xml)

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
                    return OrderResult(order.server_uuid, ok=True)
                devices = read_domain_devices(known)
            if xml is not None:
                with _step("remove domain", name):
                    self._remove_domain(name)
            with _step("read host devices", "the VFs to reset"):
                inventory = self._inventory()
        except _StepError as failure:
            return OrderResult(order.server_uuid, ok=False, fault=str(failure))
        problems = self._reset_vfs(devices, inventory)
        if problems:
            fault = f"domain {name} is gone, but " + "; ".join(problems)
            return OrderResult(order.server_uuid, ok=False, fault=fault)
        return OrderResult(order.server_uuid, ok=True)

    def _spawn(self, order: SpawnOrder, rollback: _Rollback) -> tuple[list[Binding], str]:
        name = domain_name(order.server_uuid)
        bindings = [self._bind(attached.port, attached.network, attached.device)
                    for attached in order.devices
                    if attached.port is not None and attached.network is not None]
        hostdevs = tuple(attached.device.address for attached in order.devices
                         if attached.port is None)
        with _step("build domain XML", _devices_of(name, order)):
            xml = build_domain_xml(DomainSpec(name, order.server_uuid, order.ram_mb,
                                              order.vcpus, hostdevs, tuple(bindings),
                                              title=order.name))
        self._configure_vfs(bindings, rollback)
        with _step("define domain", _devices_of(name, order)):
            self.driver.define(xml)
        # Undone even when start fails half-way: stopping a domain that is not running
        # changes nothing.
        rollback.push(f"remove domain {name}", functools.partial(self._remove_domain, name))
        with _step("start domain", _devices_of(name, order)):
            self.driver.start(name)
        return bindings, xml

    @staticmethod
    def _bind(port: PortSpec, network: NetworkSpec, device: PciDevice) -> Binding:
        with _step("bind port", f"port {port.port_id} on {device.address}"):
            return bind_port(port, network, device)

    def _configure_vfs(self, bindings: list[Binding], rollback: _Rollback) -> None:
        wanted = [(binding, config) for binding in bindings
                  if (config := vf_config_for(binding)) is not None]
        if not wanted:
            return
        with _step("read host devices", "the VFs to configure"):
            inventory = self._inventory()
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
            except (PassthruError, OSError) as error:
                problems.append(f"reset VF {address} failed: {error}")
        return problems
