"""The host's libvirt connection: define, start, stop and undefine domains, read them back,
and change their power state (shut down, reboot, reset).

The URI is host config: `qemu:///system` in production, `test:///default` in tests. The
test driver keeps domains in memory and assigns no hardware: it accepts any well-formed
`<hostdev>` and `<interface type='hostdev'|'direct'>` and starts the domain, without the
checks a real host makes at start (vfio-pci binding, IOMMU groups, VF MAC/VLAN through
netlink, libvirt's refusal of a VLAN tag next to an 802.1Qbh profile). Those only fail on
`qemu:///system`. It cannot start a domain paused either; there a paused start is a start
and a suspend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

import libvirt
from lxml import etree

from passthru.errors import HostError
from passthru.host.domain_xml import DomainDevices, read_domain_devices
from passthru.pci.work import PowerState

# Snapshots and managed-save images would otherwise make undefine fail; passthru writes
# no NVRAM, and the test driver refuses that flag.
_UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                   | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


class LibvirtError(HostError):
    """libvirt refused or failed an operation; the message names URI, domain and action."""


class DomainNotFoundError(LibvirtError):
    """No domain of that name is defined on this host."""


@dataclass(frozen=True, slots=True)
class DomainState:
    """A domain as the host sees it: whether it runs, and which host devices it holds."""

    name: str
    uuid: str
    active: bool
    devices: DomainDevices


def _ignore_libvirt_error(_context: object, _error: object) -> None:
    """libvirt prints every error to stderr unless a handler takes it; we raise instead."""


class LibvirtDriver:
    """One connection to libvirt at `uri`; every libvirt error becomes a `LibvirtError`."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as error:
            raise LibvirtError(
                f"cannot connect to libvirt at {uri}: {error.get_error_message()}; check "
                f"libvirt_uri in the host config and that the libvirt daemon runs") from None
        self._test_driver = self._conn.getType() == "TEST"

    def __enter__(self) -> LibvirtDriver:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _call(self, action: str, name: str | None = None) -> Iterator[None]:
        what = f"domain {name!r}" if name is not None else "a domain"
        try:
            yield
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFoundError(f"libvirt at {self.uri} has no {what} "
                                          f"(while trying to {action} it)") from None
            raise LibvirtError(f"libvirt at {self.uri} cannot {action} {what}: "
                               f"{error.get_error_message()}") from None

    def _lookup(self, name: str, action: str) -> libvirt.virDomain:
        with self._call(action, name):
            return self._conn.lookupByName(name)

    def kvm_emulator(self, arch: str, machine: str) -> str | None:
        """The qemu binary libvirt would run a KVM guest of `arch` and `machine` with; None
        when libvirt offers no KVM for them."""
        try:
            caps = self._conn.getDomainCapabilities(None, arch, machine, "kvm", 0)
        except libvirt.libvirtError:
            return None
        return etree.fromstring(caps.encode()).findtext("path") or None

    def uuid(self, name: str) -> str:
        """The domain's libvirt UUID."""
        domain = self._lookup(name, "read the UUID of")
        with self._call("read the UUID of", name):
            return str(domain.UUIDString())

    def define(self, xml: str) -> str:
        """Define (or redefine) a persistent domain from `xml`; returns its name."""
        with self._call("define"):
            return str(self._conn.defineXML(xml).name())

    def start(self, name: str, *, paused: bool = False) -> None:
        """Start the defined domain; `paused` leaves its vCPUs stopped until `resume`."""
        domain = self._lookup(name, "start")
        with self._call("start", name):
            if paused and self._test_driver:
                domain.create()
                domain.suspend()
            else:
                domain.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)

    def resume(self, name: str) -> None:
        domain = self._lookup(name, "resume")
        with self._call("resume", name):
            domain.resume()

    def state(self, name: str) -> PowerState:
        """Whether the domain runs (paused or suspended counts as running: it holds its
        devices and comes back by itself)."""
        domain = self._lookup(name, "read the state of")
        with self._call("read the state of", name):
            return PowerState.RUNNING if domain.isActive() else PowerState.SHUTOFF

    def shutdown(self, name: str, timeout: float, poll: float = 0.5) -> bool:
        """Ask the guest to power off (ACPI power button: our domains have no guest agent,
        so libvirt's default method is that) and wait up to `timeout` seconds;
        a guest that does not is powered off at once. Returns whether it shut down itself.
        A domain that is not running is left as it is."""
        domain = self._lookup(name, "shut down")
        with self._call("shut down", name):
            if not domain.isActive():
                return True
            domain.shutdown()
            deadline = time.monotonic() + timeout
            while domain.isActive():
                if time.monotonic() >= deadline:
                    domain.destroy()  # the guest ignored the button
                    return False
                time.sleep(poll)
            return True

    def reboot(self, name: str) -> None:
        """Ask the running guest to reboot (ACPI power button; libvirt restarts it once it
        powers off), keeping its qemu process and so its devices and taps."""
        domain = self._lookup(name, "reboot")
        with self._call("reboot", name):
            domain.reboot(0)

    def stop(self, name: str) -> None:
        """Power the domain off at once (passthrough devices need no guest shutdown to be
        reclaimed); a domain that is not running is left as it is."""
        domain = self._lookup(name, "stop")
        with self._call("stop", name):
            if domain.isActive():
                domain.destroy()

    def undefine(self, name: str) -> None:
        """Forget the domain's definition; a running domain keeps running until stopped."""
        domain = self._lookup(name, "undefine")
        with self._call("undefine", name):
            domain.undefineFlags(_UNDEFINE_FLAGS)

    def xml(self, name: str) -> str:
        """The domain XML as libvirt holds it (the live one while the domain runs)."""
        domain = self._lookup(name, "read the XML of")
        with self._call("read the XML of", name):
            return str(domain.XMLDesc(0))

    def names(self) -> list[str]:
        """The names of every domain on the host (cheap: no XML is read)."""
        with self._call("list"):
            return sorted(str(domain.name()) for domain in self._conn.listAllDomains(0))

    def domains(self) -> list[DomainState]:
        """Every domain on the host with the devices its XML holds, sorted by name."""
        with self._call("list"):
            found = self._conn.listAllDomains(0)
        states = []
        for domain in found:
            name = domain.name()
            try:
                with self._call("read", name):
                    xml = domain.XMLDesc(0)
                    active = bool(domain.isActive())
            except DomainNotFoundError:
                continue  # undefined between listing and reading: it holds nothing now
            states.append(DomainState(name, domain.UUIDString(), active,
                                      read_domain_devices(xml)))
        return sorted(states, key=lambda state: state.name)
