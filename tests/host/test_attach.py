"""Spawn and destroy on libvirt's test driver over a simulated host: the domain holds the
right devices, the VFs get the right settings, and any failure leaves nothing behind."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from passthru.host.attach import NetlinkVfApplier, VfSlot, domain_name
from passthru.host.domain_xml import (
    DomainDevices,
    DomainSpec,
    build_domain_xml,
    validate_domain_xml,
)
from passthru.host.libvirt_driver import LibvirtDriver
from passthru.host.vf import VfConfig, VfRate
from passthru.pci.binding import NetworkSpec, NetworkType, PortSpec, VifType
from passthru.pci.work import AttachedDevice, DestroyOrder, OrderResult, PowerState, SpawnOrder
from tests.host.simhost import (
    FLAT_NET2,
    GPUS,
    PF1_NETDEV,
    QAT_VF,
    VLAN_NET,
    WHOLE_PF,
    RecordingApplier,
    SimHost,
    make_host,
)
from tests.support.trees import elements, one


@pytest.fixture
def host(tmp_path: Path) -> SimHost:
    return make_host(tmp_path)


@pytest.fixture
def driver(host: SimHost) -> Iterator[LibvirtDriver]:
    # A test:///FILE connection keeps its domains to itself: every test starts empty.
    with LibvirtDriver(host.uri) as connection:
        yield connection


def flavor(host: SimHost, address: str) -> AttachedDevice:
    return AttachedDevice(host.offered[address], f"req-{address}")


def nic(host: SimHost, vnic: str, address: str, network: NetworkSpec = VLAN_NET,
        **port: object) -> AttachedDevice:
    # The MAC ends in the function number: fa:16:3e:00:00:01 for 0000:5e:01.1.
    spec = PortSpec(f"port-{vnic}-{address}", vnic,  # type: ignore[arg-type]
                    f"fa:16:3e:00:00:0{address[-1]}", **port)  # type: ignore[arg-type]
    return AttachedDevice(host.offered[address], f"req-{address}", spec, network)


def unmanaged(host: SimHost, address: str) -> AttachedDevice:
    """The device as a `managed: "no"` entry of the whitelist tags it."""
    device = host.offered[address]
    return AttachedDevice(replace(device, tags={**device.tags, "e.managed": "false"}),
                          f"req-{address}")


def spawn_order(*devices: AttachedDevice, name: str = "vm1") -> SpawnOrder:
    return SpawnOrder(str(uuid.uuid4()), name, 2, 1024, list(devices))


def every_shape(host: SimHost) -> SpawnOrder:
    """Two flavor GPUs, a flavor QuickAssist VF, a direct VF on a VLAN network without
    port security, a macvtap port and a whole PF on a flat network."""
    return spawn_order(
        flavor(host, GPUS[0]), flavor(host, GPUS[1]), flavor(host, QAT_VF),
        nic(host, "direct", "0000:5e:01.1", port_security=False, trusted=True,
            max_tx_rate=500),
        nic(host, "macvtap", "0000:5e:01.2"),
        nic(host, "direct-physical", WHOLE_PF, FLAT_NET2),
    )


def domain_names(driver: LibvirtDriver) -> set[str]:
    return {state.name for state in driver.domains()}


def interfaces(xml: str) -> list[tuple[str, str, str | None]]:
    """(type, source, vlan tag) of each interface in a domain XML."""
    root = etree.fromstring(xml.encode())
    found = []
    for interface in root.iterfind("devices/interface"):
        source = interface.find("source")
        assert source is not None
        address = source.find("address")
        where = source.get("dev") if address is None else (
            f"{address.get('bus')}:{address.get('slot')}.{address.get('function')}")
        tag = interface.find("vlan/tag")
        found.append((interface.get("type", ""), str(where),
                      None if tag is None else tag.get("id")))
    return found


def test_spawn_runs_a_domain_with_every_device_shape(host: SimHost,
                                                     driver: LibvirtDriver) -> None:
    applier = RecordingApplier()
    order = every_shape(host)

    result = host.attacher(driver, applier).spawn(order)

    assert (result.ok, result.fault) == (True, None)
    name = domain_name(order.server_uuid)
    (state,) = driver.domains()
    assert (state.name, state.uuid, state.active) == (name, order.server_uuid, True)
    assert state.devices == DomainDevices(
        ("0000:17:00.0", "0000:3d:01.0", "0000:5e:01.1", "0000:af:00.0", "0000:b1:00.0"),
        ("enp94s0f0v2",))
    assert result.domain_xml is not None
    for xml in (result.domain_xml, driver.xml(name)):
        validate_domain_xml(xml)
    assert etree.fromstring(driver.xml(name).encode()).findtext("title") == "vm1"
    assert interfaces(result.domain_xml) == [("hostdev", "0x5e:0x01.0x1", "100"),
                                             ("direct", "enp94s0f0v2", "100")]
    assert [(b.port_id, b.vif_type, b.vlan, b.profile.get("pci_slot"))
            for b in result.bindings] == [
        ("port-direct-0000:5e:01.1", VifType.HW_VEB, 100, "0000:5e:01.1"),
        ("port-macvtap-0000:5e:01.2", VifType.HW_VEB, 100, "0000:5e:01.2"),
        ("port-direct-physical-0000:af:00.0", VifType.HOSTDEV_PHYSICAL, None, WHOLE_PF)]
    assert result.bindings[0].profile == {
        "pci_slot": "0000:5e:01.1", "pci_vendor_info": "8086:1889",
        "physical_network": "physnet1", "trusted": True}
    # Only the ports' VFs are set up, each through its PF by its virtfn number.
    assert applier.applied == [
        (VfSlot("0000:5e:01.1", PF1_NETDEV, 1),
         VfConfig("fa:16:3e:00:00:01", 100, spoofchk=False, trust=True, rate=VfRate(0, 500))),
        (VfSlot("0000:5e:01.2", PF1_NETDEV, 2),
         VfConfig("fa:16:3e:00:00:02", 100, spoofchk=True, trust=False)),
    ]
    assert applier.resets == []


def test_vf_numbers_come_from_the_pfs_virtfn_links(host: SimHost,
                                                   driver: LibvirtDriver) -> None:
    applier = RecordingApplier()
    order = spawn_order(nic(host, "direct", "0000:5e:12.7", NetworkSpec(
        "prod2", NetworkType.VLAN, "physnet2", 42)))
    assert host.attacher(driver, applier).spawn(order).ok
    assert [slot for slot, _ in applier.applied] == [VfSlot("0000:5e:12.7", "enp94s0f1", 15)]
    assert applier.applied[0][1].vlan == 42


def test_destroy_stops_undefines_and_resets_only_the_network_vfs(
        host: SimHost, driver: LibvirtDriver) -> None:
    applier = RecordingApplier()
    attacher = host.attacher(driver, applier)
    order = every_shape(host)
    other = spawn_order(flavor(host, "0000:5e:01.5"), name="vm2")
    assert attacher.spawn(order).ok and attacher.spawn(other).ok

    result = attacher.destroy(DestroyOrder(order.server_uuid, order.name))

    assert result == OrderResult(order.server_uuid, ok=True)
    assert domain_names(driver) == {domain_name(other.server_uuid)}
    # The direct VF by its address, the macvtap's VF by its netdev; not the GPUs, the
    # whole PF or the QuickAssist VF.
    assert {slot.address for slot in applier.resets} == {"0000:5e:01.1", "0000:5e:01.2"}
    assert applier.configured == {}


def test_destroy_after_a_restart_finds_the_vfs_in_the_domain_xml(
        host: SimHost, driver: LibvirtDriver) -> None:
    order = every_shape(host)
    assert host.attacher(driver, RecordingApplier()).spawn(order).ok

    restarted = RecordingApplier()
    result = host.attacher(driver, restarted).destroy(DestroyOrder(order.server_uuid, "vm1"))

    assert result.ok
    assert sorted(restarted.resets, key=lambda slot: slot.index) == [
        VfSlot("0000:5e:01.1", PF1_NETDEV, 1), VfSlot("0000:5e:01.2", PF1_NETDEV, 2)]
    assert domain_names(driver) == set()


def test_an_agent_that_died_between_undefine_and_reset_resets_from_the_orders_xml(
        host: SimHost, driver: LibvirtDriver) -> None:
    applier = RecordingApplier()
    order = every_shape(host)
    spawned = host.attacher(driver, applier).spawn(order)
    assert spawned.ok and applier.configured
    # The domain went, its VFs stayed configured: the agent died in between.
    driver.stop(domain_name(order.server_uuid))
    driver.undefine(domain_name(order.server_uuid))

    result = host.attacher(driver, applier).destroy(
        DestroyOrder(order.server_uuid, "vm1", domain_xml=spawned.domain_xml))

    assert result.ok
    assert applier.configured == {}
    assert {slot.address for slot in applier.resets} == {"0000:5e:01.1", "0000:5e:01.2"}


def test_destroying_a_server_without_a_domain_is_done(host: SimHost,
                                                      driver: LibvirtDriver) -> None:
    applier = RecordingApplier()
    attacher = host.attacher(driver, applier)
    order = spawn_order(nic(host, "direct", "0000:5e:01.1"))
    assert attacher.spawn(order).ok
    destroy = DestroyOrder(order.server_uuid, "vm1")
    assert attacher.destroy(destroy).ok

    assert attacher.destroy(destroy) == OrderResult(order.server_uuid, ok=True)
    assert len(applier.resets) == 1


def test_destroy_reports_a_vf_it_could_not_reset(host: SimHost, driver: LibvirtDriver) -> None:
    applier = RecordingApplier(refuse_reset=frozenset({"0000:5e:01.2"}))
    attacher = host.attacher(driver, applier)
    order = every_shape(host)
    assert attacher.spawn(order).ok

    result = attacher.destroy(DestroyOrder(order.server_uuid, "vm1"))

    assert not result.ok
    assert result.fault == (f"domain {domain_name(order.server_uuid)} is gone, but reset VF "
                            f"0000:5e:01.2 failed: PF netdev 'enp94s0f0' not found")
    assert domain_names(driver) == set()
    assert set(applier.configured) == {"0000:5e:01.2"}


def test_vf_refused_on_the_second_port_undoes_the_first(host: SimHost,
                                                        driver: LibvirtDriver) -> None:
    applier = RecordingApplier(refuse=frozenset({"0000:5e:01.2"}))
    order = spawn_order(flavor(host, GPUS[0]), nic(host, "direct", "0000:5e:01.1"),
                        nic(host, "direct", "0000:5e:01.2"), nic(host, "direct", "0000:5e:01.3"))

    result = host.attacher(driver, applier).spawn(order)

    assert not result.ok
    assert result.fault == ("configure VF failed for port port-direct-0000:5e:01.2 on VF "
                            "0000:5e:01.2: cannot set vlan 100 on VF 2 of PF enp94s0f0: "
                            "invalid argument")
    assert domain_names(driver) == set()
    # Newest first, the half-configured VF included; the third port was never touched.
    assert [slot.address for slot in applier.resets] == ["0000:5e:01.2", "0000:5e:01.1"]
    assert applier.configured == {}
    assert (result.bindings, result.domain_xml) == ([], None)


def test_an_undo_that_fails_is_reported_and_the_others_still_run(
        host: SimHost, driver: LibvirtDriver) -> None:
    applier = RecordingApplier(refuse=frozenset({"0000:5e:01.3"}),
                               refuse_reset=frozenset({"0000:5e:01.2"}))
    order = spawn_order(nic(host, "direct", "0000:5e:01.1"), nic(host, "direct", "0000:5e:01.2"),
                        nic(host, "direct", "0000:5e:01.3"))

    result = host.attacher(driver, applier).spawn(order)

    assert result.fault is not None
    assert result.fault.endswith("; undoing the spawn also failed: reset VF 0000:5e:01.2: "
                                 "PF netdev 'enp94s0f0' not found")
    assert [slot.address for slot in applier.resets] == [
        "0000:5e:01.3", "0000:5e:01.2", "0000:5e:01.1"]
    assert set(applier.configured) == {"0000:5e:01.2"}


def test_define_refused_for_a_name_clash_leaves_the_other_domain_alone(
        host: SimHost, driver: LibvirtDriver) -> None:
    applier = RecordingApplier()
    order = spawn_order(flavor(host, GPUS[0]), nic(host, "direct", "0000:5e:01.1"))
    name = domain_name(order.server_uuid)
    squatter = str(uuid.uuid4())
    driver.define(build_domain_xml(DomainSpec(name, squatter, 512, 1)))

    result = host.attacher(driver, applier).spawn(order)

    assert result.fault is not None
    assert result.fault.startswith(
        f"define domain failed for domain {name} (devices 0000:17:00.0, 0000:5e:01.1): "
        f"libvirt at {host.uri} cannot define a domain: ")
    assert result.fault.endswith(f"domain '{name}' already exists with uuid {squatter}")
    (state,) = driver.domains()
    assert (state.name, state.uuid, state.devices.pci_addresses) == (name, squatter, ())
    assert applier.configured == {}
    assert [slot.address for slot in applier.resets] == ["0000:5e:01.1"]


def test_a_spawn_order_that_comes_again_replaces_what_its_first_attempt_left(
        host: SimHost, driver: LibvirtDriver) -> None:
    # The first spawn's answer never reached the controller (it was down, or the agent was
    # killed), so the same order comes again: the leftover domain goes, VFs reset, and the
    # spawn starts afresh instead of failing on a domain that "is already running".
    applier = RecordingApplier()
    attacher = host.attacher(driver, applier)
    order = spawn_order(nic(host, "direct", "0000:5e:01.1"), nic(host, "macvtap", "0000:5e:01.2"))
    assert attacher.spawn(order).ok
    first = set(applier.configured)

    result = attacher.spawn(order)

    assert result.ok, result.fault
    assert domain_names(driver) == {domain_name(order.server_uuid)}
    assert driver.state(domain_name(order.server_uuid)) is PowerState.RUNNING
    assert {slot.address for slot in applier.resets} == {"0000:5e:01.1", "0000:5e:01.2"}
    assert set(applier.configured) == first


@pytest.mark.parametrize(("order", "fault"), [
    (lambda h: spawn_order(nic(h, "direct", "0000:5e:01.1", FLAT_NET2)),
     r"bind port failed for port port-direct-0000:5e:01.1 on 0000:5e:01.1: .*got 0000:5e:01.1 on physnet1"),
    (lambda h: spawn_order(flavor(h, GPUS[0]), nic(h, "direct", "0000:5e:01.1"),
                           flavor(h, GPUS[0])),
     r"build domain XML failed for domain passthru-.* \(devices 0000:17:00.0, 0000:5e:01.1, "
     r"0000:17:00.0\): .*device 0000:17:00.0 is given to the VM twice"),
    (lambda h: spawn_order(nic(h, "direct", "0000:5e:01.1"), AttachedDevice(
        replace(h.offered["0000:5e:01.2"], address="0000:5e:03.0"), "r9",
        PortSpec("p9", "direct", "fa:16:3e:00:00:09"), VLAN_NET)),  # type: ignore[arg-type]
     r"device 0000:5e:03.0 is not on this host any more; refusing to start the server"),
    (lambda h: spawn_order(nic(h, "direct", "0000:5e:01.1"), AttachedDevice(
        replace(h.offered[GPUS[0]], product_id="2236"), "r9")),
     r"device 0000:17:00.0 is not the one claimed \(product_id 2236 is now 20b5\); refusing "
     r"to attach it"),
    (lambda h: spawn_order(flavor(h, GPUS[0]), unmanaged(h, QAT_VF)),
     rf"device {QAT_VF} is tagged managed = no, so libvirt leaves its driver alone, but it "
     rf"is bound to c6xxvf, not vfio-pci; bind it to vfio-pci"),
], ids=["wrong-physical-network", "device-twice", "vf-gone-from-host", "another-card",
        "unmanaged-not-on-vfio"])
def test_orders_refused_before_libvirt_leave_nothing(host: SimHost, driver: LibvirtDriver,
                                                     order: Callable[[SimHost], SpawnOrder],
                                                     fault: str) -> None:
    applier = RecordingApplier()

    result = host.attacher(driver, applier).spawn(order(host))

    assert not result.ok
    assert result.fault is not None
    assert re.match(fault, result.fault, re.DOTALL)
    assert domain_names(driver) == set()
    assert applier.configured == {}


def test_kernel_refusal_rolls_the_spawn_back(host: SimHost, driver: LibvirtDriver,
                                             pf_namespace: str) -> None:
    attacher = host.attacher(driver, NetlinkVfApplier(netns=pf_namespace))
    order = spawn_order(flavor(host, GPUS[0]), nic(host, "direct", "0000:5e:01.1"))

    result = attacher.spawn(order)

    # The reset in the rollback went through: a veth offers no VF setting to undo.
    assert result.fault == (
        "configure VF failed for port port-direct-0000:5e:01.1 on VF 0000:5e:01.1: cannot set "
        "mac fa:16:3e:00:00:01 on VF 1 of PF enp94s0f0: operation not supported (the PF has "
        "no SR-IOV VFs or its driver does not offer this setting)")
    assert domain_names(driver) == set()


def test_only_a_managed_no_device_is_left_to_its_vfio_binding(host: SimHost,
                                                              driver: LibvirtDriver) -> None:
    result = host.attacher(driver, RecordingApplier()).spawn(
        spawn_order(unmanaged(host, GPUS[0]), flavor(host, GPUS[1])))

    assert result.ok, result.fault
    assert result.domain_xml is not None
    hostdevs = elements(etree.fromstring(result.domain_xml.encode()), "devices/hostdev")
    assert [(h.get("managed"), one(h, "source/address").get("bus")) for h in hostdevs] == [
        ("no", "0x17"), ("yes", "0xb1")]
