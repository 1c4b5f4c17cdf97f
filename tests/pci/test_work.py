"""Work orders: checked on construction, and carried through pydantic (as the controller's
HTTP API will) without losing anything."""

from __future__ import annotations

import uuid

import pytest
from pydantic import TypeAdapter

from passthru.errors import InvalidInputError
from passthru.pci.binding import NetworkSpec, PortSpec, VifType, bind_port
from passthru.pci.device import PHYSICAL_NETWORK, DeviceStatus, DevType, PciDevice
from passthru.pci.work import (
    AttachedDevice,
    DestroyOrder,
    KnownServer,
    OrderResult,
    OwnedDomain,
    PortBinding,
    ReconcileReport,
    SpawnOrder,
)

SERVER = "6F0C3B2E-7C1D-4E53-9A3F-2B8F1F3C9A11"
NETWORK = NetworkSpec("prod", "vlan", "physnet1", 100)  # type: ignore[arg-type]


def vf() -> PciDevice:
    return PciDevice("0000:5e:01.1", "8086", "1889", DevType.VF, parent_addr="0000:5e:00.0",
                     netdev="enp94s0f0v1", tags={PHYSICAL_NETWORK: "physnet1"},
                     status=DeviceStatus.CLAIMED, owner=SERVER.lower(), request_id="r2")


def port() -> PortSpec:
    return PortSpec("p1", "direct", "fa:16:3e:00:00:01", port_security=False,  # type: ignore[arg-type]
                    max_tx_rate=500)


def order() -> SpawnOrder:
    gpu = PciDevice("0000:17:00.0", "10de", "20b5", numa_node=0, tags={"e.group": "gpu"})
    return SpawnOrder(SERVER, "vm1", 4, 8192, [
        AttachedDevice(gpu, "r1"),
        AttachedDevice(vf(), "r2", port(), NETWORK),
    ])


def test_server_uuids_are_canonical_and_checked() -> None:
    assert order().server_uuid == SERVER.lower()
    assert DestroyOrder(SERVER, "vm1").server_uuid == SERVER.lower()
    assert KnownServer(SERVER, active=True).server_uuid == SERVER.lower()
    with pytest.raises(InvalidInputError, match=r"server uuid 'vm1' is not a UUID"):
        SpawnOrder("vm1", "vm1", 1, 512)


def test_a_port_comes_with_its_network() -> None:
    with pytest.raises(InvalidInputError, match=r"device 0000:5e:01.1 \(request r2\): a port "
                                            r"needs the network it is on"):
        AttachedDevice(vf(), "r2", port())
    with pytest.raises(InvalidInputError, match=r"give both or neither"):
        AttachedDevice(vf(), "r2", network=NETWORK)


def test_port_binding_reports_vif_type_profile_and_vlan() -> None:
    binding = PortBinding.of(bind_port(port(), NETWORK, vf()))
    assert binding == PortBinding("p1", VifType.HW_VEB, {
        "pci_slot": "0000:5e:01.1", "pci_vendor_info": "8086:1889",
        "physical_network": "physnet1"}, 100)


@pytest.mark.parametrize("value", [
    order(),
    DestroyOrder(str(uuid.uuid4()), "vm2"),
    OrderResult(SERVER.lower(), True, None,
                [PortBinding("p1", VifType.HW_VEB, {"pci_slot": "0000:5e:01.1",
                                                    "trusted": True}, None)],
                "<domain/>"),
    OrderResult(SERVER.lower(), False, "start domain failed for ...: no"),
    ReconcileReport(
        kept=[OwnedDomain(SERVER.lower(), "passthru-x", True, ["0000:17:00.0"], ["enp1v0"])],
        orphan_faults={SERVER.lower(): "remove domain failed"}, missing=[SERVER.lower()]),
], ids=lambda value: type(value).__name__)
def test_orders_and_answers_survive_json(value: object) -> None:
    adapter: TypeAdapter[object] = TypeAdapter(type(value))
    sent = adapter.dump_json(value)
    received = adapter.validate_json(sent)
    assert received == value
    assert type(received) is type(value)


def test_json_keeps_enum_and_nested_types() -> None:
    adapter = TypeAdapter(SpawnOrder)
    received = adapter.validate_json(adapter.dump_json(order()))
    attached = received.devices[1]
    assert isinstance(attached.port, PortSpec) and isinstance(attached.network, NetworkSpec)
    assert attached.device.dev_type is DevType.VF
    assert attached.device.status is DeviceStatus.CLAIMED
    assert (attached.port.port_security, attached.port.max_tx_rate) == (False, 500)
