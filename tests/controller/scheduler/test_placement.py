"""Placement on small fleets: networks, NUMA, PF/VF, soft requests, weighers, failures."""

from __future__ import annotations

import pytest

from passthru.controller.enums import Weigher
from passthru.controller.scheduler import HostIndex, NoValidHostError, place, place_many
from passthru.pci.device import DeviceStatus, DevType
from passthru.pci.flavor import PciFlavor
from passthru.pci.pool import build_pools
from passthru.pci.request import NumaPolicy, PciRequest
from tests.controller.scheduler.fleet import (
    FLAVORS,
    gpu,
    gpus,
    index_of,
    mlx_nic,
    nic,
    pf_port,
    vf_port,
)

REQUIRED, PREFERRED, SOCKET = NumaPolicy.REQUIRED, NumaPolicy.PREFERRED, NumaPolicy.SOCKET


# --- networks: plan B (physical_network only) and plan A (explicit PCI flavor) ----------


def test_plan_b_lands_on_the_host_wired_to_the_network() -> None:
    index = index_of({"net1": nic(0, 4, "physnet1"), "net2": nic(0, 4, "physnet2")})
    for physnet, expected in (("physnet1", "net1"), ("physnet2", "net2")):
        port = vf_port(physnet)
        placement = place(index, [port])
        assert placement.host == expected
        [device] = placement.selection.devices[port.request_id]
        assert device.dev_type is DevType.VF
        assert device.physical_network == physnet


def test_plan_a_narrows_the_network_to_the_named_pci_flavor() -> None:
    index = index_of({
        "intel-net1": nic(0, 4, "physnet1"),
        "mlx-net2": mlx_nic(0, 4, "physnet2"),
        "intel-net2": nic(0, 4, "physnet2"),
    })
    port = vf_port("physnet2", "fastNIC")
    placement = place(index, [port])
    assert placement.host == "intel-net2"
    assert placement.selection.devices[port.request_id][0].product_id == "154c"
    # Plan B on the same network accepts the ConnectX VFs too: pack picks either host.
    assert place(index, [vf_port("physnet2")]).host in {"mlx-net2", "intel-net2"}


def test_two_ports_on_two_networks_need_a_host_on_both() -> None:
    index = index_of({
        "net1": nic(0, 2, "physnet1"),
        "both": nic(0, 2, "physnet1") + nic(1, 2, "physnet2"),
        "net2": nic(1, 2, "physnet2"),
    })
    ports = [vf_port("physnet1"), vf_port("physnet2", "fastNIC")]
    placement = place(index, ports)
    assert placement.host == "both"
    assert {d.physical_network for d in placement.selection.devices[ports[1].request_id]} == {
        "physnet2"}


# --- NUMA ---------------------------------------------------------------------------------


def test_numa_required_needs_every_device_on_one_node() -> None:
    index = index_of({
        "split": [gpu(0, numa=0), gpu(1, numa=1)],
        "together": [gpu(0, numa=1), gpu(1, numa=1)],
    })
    request = gpus(2, policy=REQUIRED)
    for weigher in Weigher:
        placement = place(index, [request], weigher=weigher)
        assert placement.host == "together"
        assert placement.selection.numa_cells == frozenset({1})
    # Without NUMA affinity the split host does just as well (and comes first).
    assert place(index, [gpus(2)]).host == "split"


def test_numa_bound_vm_holds_its_legacy_port_to_the_gpu_node() -> None:
    index = index_of({
        "far": [gpu(0, numa=0), *nic(0, 2, "physnet1", numa=1)],
        "near": [gpu(0, numa=0), gpu(1, numa=1), *nic(0, 2, "physnet1", numa=1)],
    })
    requests = [gpus(1, policy=REQUIRED), vf_port("physnet1")]
    placement = place(index, requests)
    assert placement.host == "near"
    assert {d.numa_node for picked in placement.selection.devices.values() for d in picked} == {1}
    # Legacy alone does not bind the VM: the far host is fine then.
    assert place(index_of({"far": [gpu(0, numa=0), *nic(0, 2, "physnet1", numa=1)]}),
                 [gpus(1), vf_port("physnet1")]).host == "far"


def test_legacy_port_accepts_devices_without_a_numa_node() -> None:
    index = index_of({"no-node-nic": [gpu(0, numa=0), *nic(0, 2, "physnet1", numa=None)]})
    placement = place(index, [gpus(1, policy=REQUIRED), vf_port("physnet1")])
    assert placement.host == "no-node-nic"


def test_numa_preferred_falls_back_to_a_remote_node() -> None:
    index = index_of({"far": [gpu(0, numa=0), *nic(0, 2, "physnet1", numa=1)]})
    requests = [gpus(1, policy=REQUIRED), vf_port("physnet1", policy=PREFERRED)]
    assert place(index, requests).host == "far"
    with pytest.raises(NoValidHostError):
        place(index, [gpus(1, policy=REQUIRED), vf_port("physnet1", policy=REQUIRED)])


def test_numa_socket_accepts_any_node_of_the_socket() -> None:
    devices = [gpu(0, numa=0), *nic(0, 2, "physnet1", numa=1)]
    requests = [gpus(1, policy=REQUIRED), vf_port("physnet1", policy=SOCKET)]
    one_socket = index_of({"h": devices}, sockets={"h": {0: 0, 1: 0}})
    assert place(one_socket, requests).host == "h"
    two_sockets = index_of({"h": [gpu(0, numa=0), *nic(0, 2, "physnet1", numa=1)]},
                           sockets={"h": {0: 0, 1: 1}})
    with pytest.raises(NoValidHostError, match="with the VM on one NUMA node"):
        place(two_sockets, requests)


# --- PF vs VF -----------------------------------------------------------------------------


def test_pf_and_vf_requests_take_whole_nics_apart() -> None:
    index = index_of({"one-nic": nic(0, 2, "physnet1"), "two-nics": nic(0, 2, "physnet1")
                      + nic(1, 2, "physnet1")})
    pf, vf = pf_port("physnet1"), vf_port("physnet1")
    placement = place(index, [pf, vf])
    assert placement.host == "two-nics"
    [pf_device] = placement.selection.devices[pf.request_id]
    [vf_device] = placement.selection.devices[vf.request_id]
    assert pf_device.dev_type is DevType.PF
    assert vf_device.parent_addr != pf_device.address


def test_a_vf_in_use_takes_its_pf_out_of_the_index() -> None:
    index = index_of({"one-nic": nic(0, 2, "physnet1")})
    vf = vf_port("physnet1")
    index.claim("one-nic", place(index, [vf]).selection, "vm1")
    with pytest.raises(NoValidHostError, match=r"no host has 1 free device "
                       r"\(type-PF\) on physical_network physnet1; none is free on any host that is up"):
        place(index, [pf_port("physnet1")])
    index.free("one-nic", "vm1")
    assert place(index, [pf_port("physnet1")]).host == "one-nic"


# --- soft requests ------------------------------------------------------------------------


def test_a_soft_request_never_blocks_the_boot() -> None:
    index = index_of({"big-only": [gpu(0, "20b5")]})
    hard, soft = gpus(1), gpus(1, "smallGPU", soft=True)
    placement = place(index, [hard, soft])
    assert placement.host == "big-only"
    assert soft.request_id not in placement.selection.devices
    assert place(index, [soft]).host == "big-only"


def test_a_soft_request_is_met_where_it_can_be() -> None:
    index = index_of({"big-only": [gpu(0, "20b5")], "both": [gpu(0, "20b5"), gpu(1, "20b6")]})
    soft = gpus(1, "smallGPU", soft=True)
    placement = place(index, [soft])
    assert placement.host == "both"
    assert placement.selection.devices[soft.request_id][0].product_id == "20b6"


# --- weighers and keeping the index current -------------------------------------------------


def fleet_with_free_gpus(*counts: int) -> HostIndex:
    return index_of({f"h{n}": [gpu(i) for i in range(count)] for n, count in enumerate(counts)})


def test_pack_takes_the_fullest_host_and_spread_the_emptiest() -> None:
    index = fleet_with_free_gpus(1, 3, 2)
    assert place(index, [gpus(1)], weigher=Weigher.PACK).host == "h0"
    assert place(index, [gpus(1)], weigher=Weigher.SPREAD).host == "h1"
    assert place(index, [gpus(2)], weigher=Weigher.PACK).host == "h2"


def test_claims_and_frees_move_hosts_in_the_weigher_order() -> None:
    index = fleet_with_free_gpus(1, 3, 2)
    request = gpus(2)
    index.claim("h1", place(index, [request], weigher=Weigher.SPREAD).selection, "vm1")
    # h1 is down to 1 free GPU: pack now prefers it, spread moves to h2.
    assert place(index, [gpus(1)], weigher=Weigher.SPREAD).host == "h2"
    assert place(index, [gpus(2)]).host == "h2"
    index.free("h1", "vm1")
    assert place(index, [gpus(1)], weigher=Weigher.SPREAD).host == "h1"


def test_down_hosts_are_skipped_until_they_come_back() -> None:
    index = fleet_with_free_gpus(1, 3)
    index.set_up("h0", False)
    assert place(index, [gpus(1)]).host == "h1"
    index.set_up("h1", False)
    with pytest.raises(NoValidHostError, match="none is free on any host that is up"):
        place(index, [gpus(1)])
    index.set_up("h0", True)
    assert place(index, [gpus(1)]).host == "h0"


def test_an_inventory_report_replaces_what_the_host_offers() -> None:
    index = fleet_with_free_gpus(1)
    assert place(index, [gpus(1)]).host == "h0"
    index.report("h0", build_pools([gpu(0, "20b6")]))
    with pytest.raises(NoValidHostError):
        place(index, [gpus(1)])
    # A host reported after the shape exists, with a pool signature never seen before.
    index.report("new", build_pools([gpu(0, "20b5", numa=None), gpu(1, "20b5", numa=None)]))
    assert place(index, [gpus(2)]).host == "new"
    index.remove("new")
    with pytest.raises(NoValidHostError):
        place(index, [gpus(1)])


def test_changed_pci_flavors_are_matched_again() -> None:
    index = fleet_with_free_gpus(1)
    assert place(index, [gpus(1)]).host == "h0"
    index.set_flavors({**FLAVORS, "bigGPU": PciFlavor("bigGPU", {"product_id": "20b6"})})
    with pytest.raises(NoValidHostError):
        place(index, [gpus(1)])


def test_excluded_hosts_are_passed_over() -> None:
    index = fleet_with_free_gpus(1, 1)
    assert place(index, [gpus(1)], exclude=frozenset({"h0"})).host == "h1"
    with pytest.raises(NoValidHostError, match="none is free on any host that is up"):
        place(index, [gpus(1)], exclude=frozenset({"h0", "h1"}))


# --- multi-create ---------------------------------------------------------------------------


def test_multi_create_places_all_vms_on_distinct_devices() -> None:
    index = fleet_with_free_gpus(1, 1, 1)
    vms = [(f"vm{n}", [gpus(1)]) for n in range(3)]
    placements = place_many(index, vms)
    assert sorted(p.host for p in placements) == ["h0", "h1", "h2"]
    assert all(d.status is DeviceStatus.CLAIMED for h in index.hosts.values()
               for d in h.devices.values())


def test_multi_create_is_all_or_nothing() -> None:
    index = fleet_with_free_gpus(1, 1, 1)
    with pytest.raises(NoValidHostError, match=r"^VM 4 of 4: no host has 1 free device"):
        place_many(index, [(f"vm{n}", [gpus(1)]) for n in range(4)])
    assert all(d.status is DeviceStatus.AVAILABLE and d.owner is None
               for h in index.hosts.values() for d in h.devices.values())
    assert len(place_many(index, [(f"vm{n}", [gpus(1)]) for n in range(3)])) == 3


# --- failure messages -----------------------------------------------------------------------


def test_failure_names_the_request_and_the_closest_host() -> None:
    index = index_of({
        "compute-1": nic(0, 2, "physnet1"),
        "compute-2": [],
        "compute-3": nic(0, 1, "physnet2"),
    })
    request = PciRequest(2, ("fastNIC",), physical_network="physnet2")
    with pytest.raises(NoValidHostError) as failure:
        place(index, [vf_port("physnet1"), request])
    assert str(failure.value) == ("no host has 2 free devices of pci flavor fastNIC on "
                                  "physical_network physnet2; closest: compute-3 has 1")
    assert failure.value.request is request
    assert failure.value.closest == "compute-3"


def test_failure_when_each_request_fits_somewhere_but_not_together() -> None:
    index = index_of({"gpu-host": [gpu(0)], "nic-host": nic(0, 2, "physnet1")})
    with pytest.raises(NoValidHostError) as failure:
        place(index, [gpus(1), vf_port("physnet1")])
    assert str(failure.value).startswith(
        "no host can give all of the VM's PCI requests at once (1 device of pci flavor "
        "bigGPU; 1 device (type-VF) on physical_network physnet1); "
        "closest: ")
    assert str(failure.value).endswith("has enough for 1 of the 2 requests")


def test_failure_of_a_numa_bound_vm_says_so() -> None:
    index = index_of({"far": [gpu(0, numa=0), *nic(0, 2, "physnet1", numa=1)]})
    with pytest.raises(NoValidHostError, match=(
            r"at once with the VM on one NUMA node .*; closest: far has enough for each "
            r"request alone, but not for all of them together")):
        place(index, [gpus(1, policy=REQUIRED), vf_port("physnet1", policy=REQUIRED)])
    with pytest.raises(NoValidHostError, match=(
            r"^no host has 2 free devices of pci flavor bigGPU on one NUMA node; "
            r"closest: split has 1$")):
        place(index_of({"split": [gpu(0, numa=0), gpu(1, numa=1)]}), [gpus(2, policy=REQUIRED)])
