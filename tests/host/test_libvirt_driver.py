"""The libvirt driver on libvirt's in-memory test driver (no daemon needed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from passthru.host.domain_xml import build_domain_xml, read_domain_devices, validate_domain_xml
from passthru.host.libvirt_driver import DomainNotFoundError, LibvirtDriver, LibvirtError
from passthru.pci.work import PowerState
from tests.host.test_domain_xml import every_shape, spec

URI = "test:///default"


@pytest.fixture
def driver() -> Iterator[LibvirtDriver]:
    with LibvirtDriver(URI) as connection:
        before = {state.name for state in connection.domains()}
        yield connection
        # test:///default is shared by the whole process: leave it as we found it.
        for state in connection.domains():
            if state.name not in before:
                connection.stop(state.name)
                if state.name in {s.name for s in connection.domains()}:
                    connection.undefine(state.name)


def unique_vm() -> tuple[str, str]:
    vm_uuid = str(uuid.uuid4())
    return f"vm-{vm_uuid[:8]}", vm_uuid


def test_define_start_read_stop_undefine_a_vm_with_every_device_shape(
        driver: LibvirtDriver) -> None:
    name, vm_uuid = unique_vm()
    xml = build_domain_xml(replace(every_shape(name), uuid=vm_uuid))

    assert driver.define(xml) == name
    driver.start(name)

    state = next(s for s in driver.domains() if s.name == name)
    assert (state.uuid, state.active) == (vm_uuid, True)
    assert state.devices == read_domain_devices(xml)
    assert state.devices.pci_addresses == (
        "0000:0a:00.0", "0000:0a:10.1", "0000:0a:10.3", "0000:81:00.0")
    assert state.devices.macvtap_netdevs == ("enp10s0f0v2",)
    # libvirt's own rendering (targets, defaults added) still passes the schema
    validate_domain_xml(driver.xml(name))

    driver.stop(name)
    assert not next(s for s in driver.domains() if s.name == name).active
    driver.stop(name)  # stopping a stopped domain changes nothing
    driver.undefine(name)
    assert name not in {s.name for s in driver.domains()}


def test_undefined_running_domain_lives_until_stopped(driver: LibvirtDriver) -> None:
    name, vm_uuid = unique_vm()
    driver.define(build_domain_xml(replace(spec(name, hostdevs=("0000:81:00.0",)),
                                           uuid=vm_uuid)))
    driver.start(name)
    driver.undefine(name)
    running = next(s for s in driver.domains() if s.name == name)
    assert running.active
    assert running.devices.pci_addresses == ("0000:81:00.0",)
    driver.stop(name)
    assert name not in {s.name for s in driver.domains()}


def test_missing_domain_is_named(driver: LibvirtDriver) -> None:
    for action in (driver.start, driver.stop, driver.undefine, driver.xml):
        with pytest.raises(DomainNotFoundError, match=r"test:///default has no domain 'ghost'"):
            action("ghost")


def test_refused_xml_says_what_libvirt_said(driver: LibvirtDriver) -> None:
    with pytest.raises(LibvirtError, match=r"cannot define a domain: .*os <type> must be"):
        driver.define("<domain type='kvm'><name>broken</name></domain>")


def test_starting_a_running_domain_is_an_error(driver: LibvirtDriver) -> None:
    name, vm_uuid = unique_vm()
    driver.define(build_domain_xml(replace(spec(name), uuid=vm_uuid)))
    driver.start(name)
    with pytest.raises(LibvirtError, match=rf"cannot start domain '{name}': .*already running"):
        driver.start(name)


def test_unreachable_libvirt_names_the_uri_and_the_setting() -> None:
    with pytest.raises(LibvirtError, match=r"cannot connect to libvirt at "
                                           r"test:///nonexistent/node.xml: .*libvirt_uri"):
        LibvirtDriver("test:///nonexistent/node.xml")


def test_power_shutdown_start_and_reboot(driver: LibvirtDriver) -> None:
    name, vm_uuid = unique_vm()
    driver.define(build_domain_xml(replace(spec(name), uuid=vm_uuid)))
    assert driver.state(name) is PowerState.SHUTOFF
    driver.start(name)
    assert driver.state(name) is PowerState.RUNNING
    driver.reboot(name)
    assert driver.state(name) is PowerState.RUNNING
    assert driver.shutdown(name, timeout=5, poll=0.01)  # the test driver's guest obeys
    assert driver.state(name) is PowerState.SHUTOFF
    assert driver.shutdown(name, timeout=5)  # nothing to do: it is off
    driver.start(name)
    assert driver.state(name) is PowerState.RUNNING
    with pytest.raises(DomainNotFoundError):
        driver.state("vm-that-is-not-there")
    driver.stop(name)
    driver.undefine(name)
