import pytest

from passthru.errors import InvalidInputError
from passthru.sim import PROFILES, Card, HostProfile, big, expand
from passthru.sim.hardware import A100, CONNECTX5, NVME_PM1733, X710


def by_address(profile: HostProfile) -> dict:
    return {function.address: function for function in expand(profile)}


def test_x710_vfs_are_numbered_like_the_kernel() -> None:
    host = HostProfile("t", "", (Card(X710, "0000:3b:00.0", ports=2, numvfs=3),))
    functions = by_address(host)
    assert functions["0000:3b:00.0"].virtfns == ("0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2")
    # Port 1's VFs start one full VF range later: offset 16 + 64 - 1 from 3b:00.1.
    assert functions["0000:3b:00.1"].virtfns[0] == "0000:3b:0a.0"
    assert functions["0000:3b:0a.2"].physfn == "0000:3b:00.1"
    assert functions["0000:3b:0a.2"].netdev == "enp59s0f1v2"
    assert functions["0000:3b:00.1"].netdev == "enp59s0f1"
    assert functions["0000:3b:00.0"].totalvfs == 64


def test_vfs_past_the_end_of_a_bus_continue_on_the_next() -> None:
    host = HostProfile("t", "", (Card(CONNECTX5, "0000:af:1f.7", numvfs=2),))
    # 0xaf * 256 + 0xff + offset 2 crosses into bus b0.
    assert by_address(host)["0000:af:1f.7"].virtfns == ("0000:b0:00.1", "0000:b0:00.2")


def test_every_function_has_its_own_iommu_group_and_address() -> None:
    for profile in PROFILES.values():
        functions = expand(profile)
        assert len({f.iommu_group for f in functions}) == len(functions)
        assert [f.address for f in functions] == sorted({f.address for f in functions})


def test_pf_and_vf_links_agree() -> None:
    for profile in PROFILES.values():
        functions = by_address(profile)
        for function in functions.values():
            for vf in function.virtfns:
                assert functions[vf].physfn == function.address
            if function.physfn:
                assert function.address in functions[function.physfn].virtfns


def test_bound_to_replaces_the_driver_and_none_numa_is_kept() -> None:
    host = HostProfile("t", "", (
        Card(A100, "0000:17:00.0", bound_to="vfio-pci"),
        Card(NVME_PM1733, "0000:5e:00.0", numa_node=None),
    ))
    functions = by_address(host)
    assert functions["0000:17:00.0"].driver == "vfio-pci"
    assert functions["0000:5e:00.0"].driver == "nvme"
    assert functions["0000:5e:00.0"].numa_node is None


@pytest.mark.parametrize(
    ("card", "message"),
    [
        (Card(X710, "0000:3b:00.0", numvfs=65), "at most 64 VFs"),
        (Card(A100, "0000:17:00.0", numvfs=1), "at most 0 VFs"),
        (Card(A100, "0000:3b:00"), "card a100: PCI address '0000:3b:00' is malformed"),
        (Card(A100, "0000:3b:20.0"), "card a100: slot 20 .* out of range"),
        (Card(X710, "0000:ff:1f.0", numvfs=64), "past bus ff"),
    ],
)
def test_impossible_cards_are_refused(card: Card, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        expand(HostProfile("t", "", (card,)))


def test_card_addresses_are_read_as_everywhere_else() -> None:
    # The one PCI address parser: domain 0 may go unwritten, hex in either case.
    functions = by_address(HostProfile("t", "", (Card(X710, "3B:00.0", numvfs=1),)))
    assert sorted(functions) == ["0000:3b:00.0", "0000:3b:02.0"]
    assert functions["0000:3b:02.0"].physfn == "0000:3b:00.0"


def test_overlapping_cards_are_refused() -> None:
    host = HostProfile("t", "", (
        Card(X710, "0000:3b:00.0", numvfs=1),
        Card(A100, "0000:3b:02.0"),
    ))
    with pytest.raises(InvalidInputError, match=r"two functions at 0000:3b:02\.0"):
        expand(host)


def test_big_host_has_the_bench_shape() -> None:
    functions = expand(big(pfs=4, vfs=128, gpus=8))
    pfs = [f for f in functions if f.totalvfs and f.vendor_id == "8086" and f.virtfns]
    assert len(pfs) == 4
    assert all(len(pf.virtfns) == 128 for pf in pfs)
    assert sum(f.vendor_id == "10de" for f in functions) == 8


def test_registry_has_the_promised_hosts() -> None:
    assert {"x710-2x", "e810", "connectx", "gpu-2numa", "qat", "mixed"} <= set(PROFILES)
    numa = {f.numa_node for f in expand(PROFILES["gpu-2numa"]) if f.vendor_id == "10de"}
    assert numa == {0, 1}
    assert any(f.numa_node is None for f in expand(PROFILES["mixed"]))
    assert any("exclude" in entry for entry in PROFILES["mixed"].pci_information)
