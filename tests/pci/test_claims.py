"""Fit and claim rules on hand-built hosts, plus the hypothesis properties of issue 2."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passthru.pci.device import DeviceStatus, DevType, PciDevice
from passthru.pci.fit import numa_filter, select_devices
from passthru.pci.lifecycle import ClaimError, allocate, claim, free
from passthru.pci.pool import build_pools
from passthru.pci.request import NumaPolicy, PciRequest
from tests.pci.builders import by_product, gpu, host, nic


def test_a_set_of_requests_never_counts_a_device_twice() -> None:
    pools, _ = host(gpu(0, "20b5"), gpu(1, "20b6"))
    # Greedy would give 20b5 to the first request and starve the second.
    requests = [PciRequest(1, ("20b5", "20b6")), PciRequest(1, ("20b5",))]
    selection = select_devices(pools, requests, by_product)
    assert selection is not None
    assert selection.devices[requests[1].request_id][0].product_id == "20b5"
    assert selection.devices[requests[0].request_id][0].product_id == "20b6"
    assert select_devices(pools, [*requests, PciRequest(1, ("20b5", "20b6"))], by_product) is None


def test_pf_and_its_vfs_exclude_each_other_within_one_selection() -> None:
    pools, _ = host(nic(0, 2, "physnet1"))
    pf = PciRequest(1, (), dev_type=DevType.PF)
    vf = PciRequest(1, (), dev_type=DevType.VF)
    assert select_devices(pools, [pf], by_product) is not None
    assert select_devices(pools, [vf], by_product) is not None
    assert select_devices(pools, [pf, vf], by_product) is None
    pools, _ = host(nic(0, 2, "physnet1"), nic(1, 2, "physnet1"))
    selection = select_devices(pools, [pf, vf], by_product)
    assert selection is not None
    chosen_pf = selection.devices[pf.request_id][0]
    chosen_vf = selection.devices[vf.request_id][0]
    assert chosen_vf.parent_addr != chosen_pf.address


def test_claim_blocks_relatives_and_free_restores_them() -> None:
    pools, devices = host(nic(0, 2, "physnet1"))
    vf = PciRequest(1, (), dev_type=DevType.VF)
    selection = select_devices(pools, [vf], by_product)
    assert selection is not None
    claim(devices, selection, "vm1")
    assert devices["0000:10:00.0"].status is DeviceStatus.UNAVAILABLE
    # With the PF blocked no PF request fits any more.
    assert select_devices(pools, [PciRequest(1, (), dev_type=DevType.PF)], by_product) is None
    allocate(devices, "vm1")
    assert [d.status for d in devices.values() if d.owner == "vm1"] == [DeviceStatus.ALLOCATED]
    free(devices, "vm1")
    assert all(d.status is DeviceStatus.AVAILABLE and d.owner is None for d in devices.values())


def test_claiming_a_pf_blocks_its_vfs_until_freed() -> None:
    pools, devices = host(nic(0, 3, "physnet1"))
    selection = select_devices(pools, [PciRequest(1, (), dev_type=DevType.PF)], by_product)
    assert selection is not None
    claim(devices, selection, "vm1")
    assert Counter(d.status for d in devices.values()) == {
        DeviceStatus.CLAIMED: 1, DeviceStatus.UNAVAILABLE: 3}
    free(devices, "vm1")
    assert {d.status for d in devices.values()} == {DeviceStatus.AVAILABLE}


def test_a_pf_stays_blocked_while_another_of_its_vfs_is_in_use() -> None:
    pools, devices = host(nic(0, 2, "physnet1"))
    vf = PciRequest(1, (), dev_type=DevType.VF)
    first = select_devices(pools, [vf], by_product)
    assert first is not None
    claim(devices, first, "vm1")
    second = select_devices(pools, [vf], by_product)
    assert second is not None
    claim(devices, second, "vm2")
    free(devices, "vm1")
    assert devices["0000:10:00.0"].status is DeviceStatus.UNAVAILABLE
    free(devices, "vm2")
    assert devices["0000:10:00.0"].status is DeviceStatus.AVAILABLE


def test_claiming_a_taken_device_is_refused() -> None:
    pools, devices = host(gpu(0))
    selection = select_devices(pools, [PciRequest(1, ("20b5",))], by_product)
    assert selection is not None
    claim(devices, selection, "vm1")
    with pytest.raises(ClaimError, match=r"0000:40:00\.0 is claimed, not available"):
        claim(devices, selection, "vm2")


def test_a_missing_device_is_removed_when_freed() -> None:
    pools, devices = host(gpu(0))
    selection = select_devices(pools, [PciRequest(1, ("20b5",))], by_product)
    assert selection is not None
    claim(devices, selection, "vm1")
    devices["0000:40:00.0"].missing = True
    free(devices, "vm1")
    assert devices["0000:40:00.0"].status is DeviceStatus.REMOVED


def test_physical_network_narrows() -> None:
    pools, _ = host(nic(0, 2, "physnet1"), nic(1, 2, "physnet2"))
    request = PciRequest(2, (), physical_network="physnet2", dev_type=DevType.VF)
    selection = select_devices(pools, [request], by_product)
    assert selection is not None
    assert {d.parent_addr for d in selection.devices[request.request_id]} == {"0000:11:00.0"}
    assert select_devices(pools, [PciRequest(3, (), physical_network="physnet2",
                                             dev_type=DevType.VF)], by_product) is None


def test_soft_requests_never_block() -> None:
    pools, _ = host(gpu(0))
    hard = PciRequest(1, ("20b5",))
    soft = PciRequest(1, ("20b5",), soft=True)
    selection = select_devices(pools, [hard, soft], by_product)
    assert selection is not None
    assert set(selection.devices) == {hard.request_id}
    selection = select_devices(pools, [soft], by_product)
    assert selection is not None and len(selection.devices[soft.request_id]) == 1


# --- NUMA, with Nova's semantics -------------------------------------------------------


NUMA_HOST = [gpu(0, numa=0), gpu(1, numa=1), gpu(2, numa=1), gpu(3, numa=None)]


@pytest.mark.parametrize(
    ("policy", "count", "cell", "expected_nodes"),
    [
        (NumaPolicy.REQUIRED, 1, 0, {0}),
        (NumaPolicy.REQUIRED, 2, 0, None),
        (NumaPolicy.REQUIRED, 2, 1, {1}),
        (NumaPolicy.LEGACY, 1, 0, {0}),
        (NumaPolicy.LEGACY, 2, 0, {0, None}),
        (NumaPolicy.LEGACY, 3, 0, None),
        (NumaPolicy.PREFERRED, 2, 0, {0, None}),
        (NumaPolicy.PREFERRED, 3, 0, {0, None, 1}),
        (NumaPolicy.PREFERRED, 5, 0, None),
    ],
)
def test_numa_policies(policy: NumaPolicy, count: int, cell: int,
                       expected_nodes: set[int | None] | None) -> None:
    pools, _ = host(*copy.deepcopy(NUMA_HOST))
    request = PciRequest(count, ("20b5",), numa_policy=policy)
    selection = select_devices(pools, [request], by_product, numa_cells=frozenset({cell}))
    if expected_nodes is None:
        assert selection is None
    else:
        assert selection is not None
        assert {d.numa_node for d in selection.devices[request.request_id]} == expected_nodes


def test_socket_policy_uses_the_socket_map() -> None:
    pools, _ = host(*copy.deepcopy(NUMA_HOST))
    request = PciRequest(2, ("20b5",), numa_policy=NumaPolicy.SOCKET)
    # Nodes 0 and 1 share socket 0: two devices on that socket, the node-less one never.
    cells = frozenset({0})
    assert len(numa_filter(pools, request, cells, {0: 0, 1: 0})) == 2
    selection = select_devices(pools, [request], by_product, numa_cells=cells, socket_of={0: 0, 1: 0})
    assert selection is not None
    assert {d.numa_node for d in selection.devices[request.request_id]} <= {0, 1}
    assert select_devices(pools, [request], by_product, numa_cells=cells, socket_of={0: 0, 1: 1}) is None


def test_without_numa_cells_no_filtering() -> None:
    pools, _ = host(*copy.deepcopy(NUMA_HOST))
    request = PciRequest(4, ("20b5",), numa_policy=NumaPolicy.REQUIRED)
    assert select_devices(pools, [request], by_product) is not None


# --- properties ------------------------------------------------------------------------

PRODUCTS = ["20b5", "20b6", "1572"]


@st.composite
def hosts(draw: st.DrawFn) -> list[PciDevice]:
    devices: list[PciDevice] = []
    for n in range(draw(st.integers(0, 6))):
        devices.append(gpu(n, draw(st.sampled_from(PRODUCTS[:2])),
                           draw(st.sampled_from([0, 1, None]))))
    for pf in range(draw(st.integers(0, 3))):
        devices += nic(pf, draw(st.integers(0, 4)), draw(st.sampled_from(["physnet1", "physnet2"])),
                       draw(st.sampled_from([0, 1])))
    return devices


@st.composite
def request_sets(draw: st.DrawFn) -> list[PciRequest]:
    requests = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["gpu", "vf", "pf"]))
        if kind == "gpu":
            names = tuple(draw(st.lists(st.sampled_from(PRODUCTS[:2]), min_size=1, max_size=2,
                                        unique=True)))
            requests.append(PciRequest(draw(st.integers(1, 3)), names,
                                       soft=draw(st.booleans())))
        else:
            requests.append(PciRequest(
                draw(st.integers(1, 3)), (),
                dev_type=DevType.VF if kind == "vf" else DevType.PF,
                physical_network=draw(st.sampled_from([None, "physnet1", "physnet2"]))))
    return requests


@given(hosts(), st.lists(st.sampled_from(["vendor_id", "product_id", "e.*", "dev_type"]),
                         unique=True))
def test_pools_partition_the_devices(devices: list[PciDevice], attrs: list[str]) -> None:
    pools = build_pools(devices, attrs)
    members = [d.address for p in pools for d in p.devices]
    assert sorted(members) == sorted(d.address for d in devices)
    for pool in pools:
        for device in pool.devices:
            assert device.dev_type is pool.dev_type and device.numa_node == pool.numa_node


@settings(max_examples=200)
@given(hosts(), request_sets())
def test_fit_then_claim_never_exceeds_a_pool_and_free_restores(
        devices: list[PciDevice], requests: list[PciRequest]) -> None:
    pools = build_pools(devices)
    by_address = {d.address: d for d in devices}
    before = {a: (d.status, d.owner) for a, d in by_address.items()}
    free_before = {id(p): p.free for p in pools}
    selection = select_devices(pools, requests, by_product)
    if selection is None:
        return
    chosen = selection.addresses
    assert len(chosen) == len(set(chosen)), "a device was counted twice"
    for request in requests:
        picked = selection.devices.get(request.request_id, ())
        assert len(picked) == (request.count if picked or not request.soft else 0)
        assert all(by_product(request, p) for p in pools for d in picked if d in p.devices)
    claim(by_address, selection, "vm")
    for pool in pools:
        taken = sum(1 for d in pool.devices if d.owner == "vm")
        assert taken <= free_before[id(pool)]
        assert pool.free >= 0
    # PF/VF exclusion holds after the claim.
    for device in by_address.values():
        if device.owner == "vm" and device.dev_type is DevType.VF:
            assert device.parent_addr is not None
            assert by_address[device.parent_addr].owner != "vm"
    free(by_address, "vm")
    assert {a: (d.status, d.owner) for a, d in by_address.items()} == before
