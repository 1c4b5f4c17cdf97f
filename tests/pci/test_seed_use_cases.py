"""The seed wiki's use cases, end to end through the domain core.

Each case: the host's devices, its `pci_information` and `pool_attrs`, the PCI flavors the
operator creates, and what the wiki predicts — the pools the host reports and which boots
fit. The wiki writes `device_id` where it means the vendor and `vendor_id` where it means
the product in some examples; the cases below use the ids as the prose describes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from passthru.pci.device import DevType, PciDevice
from passthru.pci.fit import flavor_filter, select_devices
from passthru.pci.flavor import PciFlavor
from passthru.pci.lifecycle import claim
from passthru.pci.pool import build_pools
from passthru.pci.request import PciRequest, narrow_to_supported, parse_seed_spec
from passthru.pci.spec import Whitelist, parse_pci_information, parse_seed_oneliner


def card(n: int, vendor: str, product: str, dev_type: DevType = DevType.PCI) -> PciDevice:
    return PciDevice(f"0000:{0x81 + n:02x}:00.0", vendor, product, dev_type)


@dataclass
class Case:
    devices: list[PciDevice]
    whitelist: Whitelist
    pool_attrs: list[str]
    flavors: dict[str, dict[str, str]]
    pools: list[dict[str, object]]
    fits: list[str] = field(default_factory=list)
    misfits: list[str] = field(default_factory=list)


TWO_GPUS = [card(0, "8086", "0001"), card(1, "8086", "0002")]
QA_CARDS = [card(0, "1001", "000a"), card(1, "1001", "000b"), card(2, "1002", "000b")]

CASES = {
    "general GPU": Case(
        devices=[card(0, "8086", "0001")],
        whitelist=Whitelist(parse_pci_information([{"match": {"vendor_id": "8086", "product_id": "0001"}}])),
        pool_attrs=["product_id", "vendor_id"],
        flavors={"bigGPU": {"vendor_id": "8086", "product_id": "0001"}},
        pools=[{"vendor_id": "8086", "product_id": "0001", "count": 1}],
        fits=["1:bigGPU;"],
        misfits=["2:bigGPU;"],
    ),
    "multi PCI flavor candidate": Case(
        devices=TWO_GPUS,
        whitelist=Whitelist(parse_pci_information([{"match": {"vendor_id": "8086", "product_id": "000[1-2]"}}])),
        pool_attrs=["product_id", "vendor_id"],
        flavors={"bigGPU": {"vendor_id": "8086", "product_id": "0001"},
                 "bigGPU2": {"vendor_id": "8086", "product_id": "0002"}},
        pools=[{"vendor_id": "8086", "product_id": "0001", "count": 1},
               {"vendor_id": "8086", "product_id": "0002", "count": 1}],
        fits=["1:bigGPU,bigGPU2;", "2:bigGPU,bigGPU2;", "1:bigGPU;1:bigGPU2"],
        misfits=["2:bigGPU;", "3:bigGPU,bigGPU2"],
    ),
    "wildcard PCI flavor": Case(
        devices=TWO_GPUS,
        whitelist=Whitelist(parse_pci_information([{"match": {"vendor_id": "8086", "product_id": "000[1-2]"}}])),
        pool_attrs=["product_id", "vendor_id"],
        flavors={"bigGPU": {"vendor_id": "8086", "product_id": "000[1-2]"}},
        pools=[{"vendor_id": "8086", "product_id": "0001", "count": 1},
               {"vendor_id": "8086", "product_id": "0002", "count": 1}],
        fits=["1:bigGPU;", "2:bigGPU;"],
        misfits=["3:bigGPU;"],
    ),
    "grouping tag e.group": Case(
        devices=TWO_GPUS,
        whitelist=Whitelist(parse_seed_oneliner(
            "[ {'vendor_id': '8086', 'product_id': '000[1-2]'}, {'e.group': 'gpu'} ]")),
        pool_attrs=["e.group"],
        flavors={"bigGPU": {"e.group": "gpu"}},
        pools=[{"e.group": "gpu", "count": 2}],
        fits=["1:bigGPU;", "2:bigGPU;"],
        misfits=["3:bigGPU;"],
    ),
    "SR-IOV tagged e.physical_network": Case(
        devices=[card(n, "8086", "0022") for n in range(5)],
        whitelist=Whitelist(parse_pci_information([
            {"match": {"vendor_id": "8086", "product_id": "0022"},
             "extra": {"e.physical_network": "X"}}])),
        pool_attrs=["e.physical_network"],
        flavors={"phyX_NIC": {"e.physical_network": "X"}},
        pools=[{"e.physical_network": "X", "count": 5}],
        fits=["1:phyX_NIC;", "5:phyX_NIC"],
        misfits=["6:phyX_NIC"],
    ),
    "encryption cards QA1 / QA13": Case(
        devices=QA_CARDS,
        whitelist=Whitelist(parse_pci_information([
            {"match": {"vendor_id": "1001", "product_id": "0xa"}, "extra": {"e.QAclass": "1"}},
            {"match": {"vendor_id": "1001", "product_id": "0xb"}, "extra": {"e.QAclass": "2"}},
            {"match": {"vendor_id": "1002", "product_id": "0xb"}, "extra": {"e.QAclass": "3"}},
        ])),
        pool_attrs=["e.QAclass"],
        flavors={"QA1": {"e.QAclass": "1"}, "QA13": {"e.QAclass": "(1|3)"}},
        pools=[{"e.QAclass": "1", "count": 1}, {"e.QAclass": "2", "count": 1},
               {"e.QAclass": "3", "count": 1}],
        # The wiki boots '3:QA13' on a host with one card of each class; only two cards
        # are class 1 or 3, so three cannot fit there.
        fits=["1:QA1;", "2:QA13;", "1:QA1;1:QA13"],
        misfits=["2:QA1;", "3:QA13;"],
    ),
}


def reported_pools(case: Case) -> list[dict[str, object]]:
    taken = case.whitelist.taken(case.devices)
    return [{**pool.attrs, "count": pool.count} for pool in build_pools(taken, case.pool_attrs)]


@pytest.mark.parametrize("name", CASES)
def test_pools_are_what_the_wiki_predicts(name: str) -> None:
    case = CASES[name]
    key = lambda p: sorted(p.items())  # noqa: E731
    assert sorted(reported_pools(case), key=key) == sorted(case.pools, key=key)


def fits(case: Case, spec: str) -> bool:
    pools = build_pools(case.whitelist.taken(case.devices), case.pool_attrs)
    flavors = {name: PciFlavor(name, values) for name, values in case.flavors.items()}
    return select_devices(pools, parse_seed_spec(spec), flavor_filter(flavors)) is not None


@pytest.mark.parametrize(("name", "spec"), [(n, s) for n, c in CASES.items() for s in c.fits])
def test_boots_that_fit(name: str, spec: str) -> None:
    assert fits(CASES[name], spec)


@pytest.mark.parametrize(("name", "spec"), [(n, s) for n, c in CASES.items() for s in c.misfits])
def test_boots_that_do_not_fit(name: str, spec: str) -> None:
    assert not fits(CASES[name], spec)


def test_qa1_image_narrows_a_qa13_request_to_class_1_cards() -> None:
    case = CASES["encryption cards QA1 / QA13"]
    taken = case.whitelist.taken(case.devices)
    pools = build_pools(taken, case.pool_attrs)
    flavors = {name: PciFlavor(name, values) for name, values in case.flavors.items()}
    requests = narrow_to_supported(parse_seed_spec("1:QA13,QA1"), {"QA1"}, image="QA1_image")
    selection = select_devices(pools, requests, flavor_filter(flavors))
    assert selection is not None
    assert [d.tags["e.QAclass"] for d in selection.devices[requests[0].request_id]] == ["1"]


def test_successive_boots_use_up_the_pools() -> None:
    case = CASES["multi PCI flavor candidate"]
    taken = {d.address: d for d in case.whitelist.taken(case.devices)}
    pools = build_pools(taken.values(), case.pool_attrs)
    flavors = {name: PciFlavor(name, values) for name, values in case.flavors.items()}
    serves = flavor_filter(flavors)
    for vm in ("vm1", "vm2"):
        selection = select_devices(pools, parse_seed_spec("1:bigGPU,bigGPU2"), serves)
        assert selection is not None
        claim(taken, selection, vm)
    assert select_devices(pools, [PciRequest(1, ("bigGPU", "bigGPU2"))], serves) is None
    assert sorted(d.owner or "" for d in taken.values()) == ["vm1", "vm2"]
