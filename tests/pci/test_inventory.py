from dataclasses import replace

from passthru.pci.device import DeviceStatus, DevType, PciDevice
from passthru.pci.fit import select_devices
from passthru.pci.inventory import apply_delta, diff_inventory
from passthru.pci.lifecycle import claim, free
from passthru.pci.pool import build_pools
from passthru.pci.request import PciRequest
from tests.pci.builders import by_product, gpu, nic


def scan() -> list[PciDevice]:
    return [gpu(0), gpu(1), *nic(0, 2, "physnet1")]


def tracked_from(devices: list[PciDevice]) -> dict[str, PciDevice]:
    return {d.address: replace(d) for d in devices}


def claim_a100(tracked: dict[str, PciDevice], owner: str) -> PciDevice:
    """One 20b5 GPU of `tracked`, claimed by `owner`."""
    selection = select_devices(build_pools(tracked.values()), [PciRequest(1, ("20b5",))],
                               by_product)
    assert selection is not None
    claim(tracked, selection, owner)
    return next(d for d in tracked.values() if d.owner == owner)


def test_diff_reports_additions_changes_and_removals_only() -> None:
    before = tracked_from(scan())
    assert not diff_inventory(before, scan())
    now = scan()
    now[0].driver = "vfio-pci"
    del now[1]
    now.append(gpu(7))
    delta = diff_inventory(before, now)
    assert [d.address for d in delta.added] == [gpu(7).address]
    assert [d.address for d in delta.changed] == [gpu(0).address]
    assert delta.removed == [gpu(1).address]


def test_use_is_not_a_hardware_change() -> None:
    before = tracked_from(scan())
    before[gpu(0).address].status = DeviceStatus.ALLOCATED
    before[gpu(0).address].owner = "vm1"
    assert not diff_inventory(before, scan())


def test_hot_add_and_removal_of_a_free_device() -> None:
    tracked = tracked_from(scan())
    changes = apply_delta(tracked, diff_inventory(tracked, [*scan()[1:], gpu(9)]))
    assert {(c.kind, c.address) for c in changes} == {
        ("added", gpu(9).address), ("removed", gpu(0).address)}
    assert tracked[gpu(0).address].status is DeviceStatus.REMOVED
    assert tracked[gpu(9).address].status is DeviceStatus.AVAILABLE
    # It comes back: available again, not a duplicate.
    apply_delta(tracked, diff_inventory({a: d for a, d in tracked.items()
                                         if d.status is not DeviceStatus.REMOVED}, scan()))
    assert tracked[gpu(0).address].status is DeviceStatus.AVAILABLE


def test_a_removed_device_in_use_is_kept_until_freed() -> None:
    tracked = tracked_from(scan())
    owned = claim_a100(tracked, "vm1")
    remaining = [d for d in scan() if d.address != owned.address]
    changes = apply_delta(tracked, diff_inventory(tracked, remaining))
    assert [(c.kind, c.address) for c in changes] == [("missing", owned.address)]
    assert tracked[owned.address].status is DeviceStatus.CLAIMED
    assert tracked[owned.address].owner == "vm1"
    # Reporting the same again changes nothing.
    assert apply_delta(tracked, diff_inventory(tracked, remaining)) == []
    free(tracked, "vm1")
    assert tracked[owned.address].status is DeviceStatus.REMOVED


def test_a_vf_appearing_under_a_pf_in_use_is_unavailable() -> None:
    tracked = tracked_from(nic(0, 1, "physnet1"))
    pools = build_pools(tracked.values())
    selection = select_devices(pools, [PciRequest(1, (), dev_type=DevType.PF)], by_product)
    assert selection is not None
    claim(tracked, selection, "vm1")
    apply_delta(tracked, diff_inventory(tracked, nic(0, 3, "physnet1")))
    new_vfs = [d for d in tracked.values() if d.dev_type is DevType.VF]
    assert len(new_vfs) == 3
    assert {d.status for d in new_vfs} == {DeviceStatus.UNAVAILABLE}


def test_an_update_says_what_changed() -> None:
    tracked = tracked_from(scan())
    now = scan()
    now[0].driver = "vfio-pci"
    changes = apply_delta(tracked, diff_inventory(tracked, now))
    assert [(c.kind, c.address, c.detail) for c in changes] == [
        ("updated", gpu(0).address, "driver none → vfio-pci")]
    assert tracked[gpu(0).address].driver == "vfio-pci"


def test_another_card_at_the_address_of_a_device_in_use_is_an_alarm() -> None:
    tracked = tracked_from(scan())
    owned = claim_a100(tracked, "vm1")
    now = [replace(d, product_id="2236") if d.address == owned.address else d for d in scan()]
    changes = apply_delta(tracked, diff_inventory(tracked, now))
    assert [(c.kind, c.address, c.detail) for c in changes] == [
        ("identity-changed", owned.address, "product_id 20b5 → 2236, while server vm1 holds "
                                            "it: check what was put in that slot; the device "
                                            "is tainted until cleared")]
    assert tracked[owned.address].taint == (
        "identity changed while server vm1 held it: product_id 20b5 → 2236")
    # Freed, it stays tainted: no other VM gets it until an operator clears it.
    free(tracked, "vm1")
    assert not tracked[owned.address].is_free
    tracked[owned.address].taint = None
    # Free, the same change is an update.
    again = [replace(d, product_id="20b5") if d.address == owned.address else d for d in scan()]
    assert [c.kind for c in apply_delta(tracked, diff_inventory(tracked, again))] == ["updated"]
