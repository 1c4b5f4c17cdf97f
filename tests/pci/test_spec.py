"""pci_information: the three spellings, and the whitelist's decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passthru.errors import InvalidInputError
from passthru.pci.device import SYNONYMS, DevType, PciDevice
from passthru.pci.spec import (
    DeviceSpec,
    DeviceSpecError,
    Whitelist,
    parse_device_spec,
    parse_pci_information,
    parse_seed_oneliner,
)

PF0 = PciDevice("0000:0a:00.0", "8086", "1572", DevType.PF, dev_class="020000",
                driver="i40e", netdev="ens1f0", numa_node=0)
PF1 = PciDevice("0000:0a:00.1", "8086", "1572", DevType.PF, dev_class="020000",
                driver="i40e", netdev="ens1f1", numa_node=0)
VFS0 = [PciDevice(f"0000:0a:02.{n}", "8086", "154c", DevType.VF, dev_class="020000",
                  parent_addr=PF0.address, driver="iavf", numa_node=0) for n in range(4)]
VFS1 = [PciDevice(f"0000:0a:0a.{n}", "8086", "154c", DevType.VF, dev_class="020000",
                  parent_addr=PF1.address, driver="vfio-pci", numa_node=0) for n in range(2)]
GPU = PciDevice("0000:81:00.0", "10de", "20b5", dev_class="030200", driver="vfio-pci",
                numa_node=1)
DISK = PciDevice("0000:c1:00.0", "144d", "a808", dev_class="010802", driver="nvme")
HOST = [PF0, PF1, *VFS0, *VFS1, GPU, DISK]


def decide(specs: list[DeviceSpec], devices: list[PciDevice] = HOST) -> dict[str, object]:
    """address → tags dict when taken, else the reason it was not."""
    return {d.device.address: d.tags if d.taken else d.reason
            for d in Whitelist(specs).apply(devices)}


def taken(specs: list[DeviceSpec], devices: list[PciDevice] = HOST) -> list[str]:
    return [d.address for d in Whitelist(specs).taken(devices)]


# --- the three spellings mean the same -------------------------------------------------

SAME_ENTRY = {
    "toml": lambda: parse_pci_information([
        {"match": {"vendor_id": "8086", "product_id": "154c", "address": "*:0a:02.*"},
         "extra": {"e.physical_network": "physnet1", "e.group": "nic"}}]),
    "nova": lambda: parse_device_spec([
        '{"vendor_id": "8086", "product_id": "154c", "address": "*:0a:02.*", '
        '"physical_network": "physnet1", "e.group": "nic"}']),
    "seed": lambda: parse_seed_oneliner(
        "[ {'vendor_id': '8086', 'product_id': '154c', 'address': '*:0a:02.*'}, "
        "{'physical_network': 'physnet1', 'e.group': 'nic'} ]"),
}


@pytest.mark.parametrize("spelling", SAME_ENTRY)
def test_every_spelling_gives_the_same_decisions(spelling: str) -> None:
    specs = SAME_ENTRY[spelling]()
    assert len(specs) == 1
    assert specs[0].extra == {"e.physical_network": "physnet1", "e.group": "nic"}
    assert taken(specs) == [vf.address for vf in VFS0]
    assert decide(specs)[VFS0[0].address] == {"e.physical_network": "physnet1",
                                              "e.group": "nic"}


def test_every_spelling_gives_an_equal_model() -> None:
    toml, nova, seed = (make()[0] for make in SAME_ENTRY.values())
    assert (toml.match, toml.address, toml.extra) == (nova.match, nova.address, nova.extra)
    assert (toml.match, toml.address, toml.extra) == (seed.match, seed.address, seed.extra)
    assert toml.origin == "pci_information entry 1"
    assert nova.origin == "device_spec line 1"


def test_seed_oneliner_with_several_pairs_and_the_seeds_outer_braces() -> None:
    flat = parse_seed_oneliner(
        "[ {'vendor_id': '10de'}, {'e.group': 'gpu'}, {'vendor_id': '144d'}, {} ]")
    nested = parse_seed_oneliner(
        '[[{"vendor_id": "10de"}, {"e.group": "gpu"}], [{"vendor_id": "144d"}, {}]]')
    braces = parse_seed_oneliner("{ { 'vendor_id': \"10de\" }, { 'e.group': 'gpu' } }")
    assert decide(flat) == decide(nested)
    assert taken(flat) == [GPU.address, DISK.address]
    assert decide(braces)[GPU.address] == {"e.group": "gpu"}
    assert [s.origin for s in flat] == ["pci_information pair 1", "pci_information pair 2"]


def test_the_seeds_device_id_is_the_product_id() -> None:
    specs = parse_seed_oneliner("{ { 'device_id': \"20b5\", 'vendor_id': \"10de\" }, {} }")
    assert taken(specs) == [GPU.address]


def test_a_nova_line_may_hold_a_list_of_specs() -> None:
    specs = parse_device_spec(['[{"vendor_id": "10de"}, {"vendor_id": "144d"}]',
                               '{"product_id": "1572"}'])
    assert [s.origin for s in specs] == ["device_spec line 1 item 1", "device_spec line 1 item 2",
                                        "device_spec line 2"]
    assert taken(specs) == [PF0.address, PF1.address, GPU.address, DISK.address]


@pytest.mark.parametrize(("nova", "tags"), [
    ('{"vendor_id": "10de", "physical_network": "p1"}', {"e.physical_network": "p1"}),
    ('{"vendor_id": "10de", "trusted": "yes"}', {"e.trusted": "true"}),
    ('{"vendor_id": "10de", "trusted": true}', {"e.trusted": "true"}),
    ('{"vendor_id": "10de", "remote_managed": "False"}', {"e.remote_managed": "false"}),
    ('{"vendor_id": "10de", "managed": "no"}', {"e.managed": "false"}),
    ('{"vendor_id": "10de", "resource_class": "CUSTOM_A"}', {"e.resource_class": "CUSTOM_A"}),
    ('{"vendor_id": "10de", "rack": "r7", "e.zone": "z"}', {"e.rack": "r7", "e.zone": "z"}),
    ('{"vendor_id": "10de", "slot_count": 2}', {"e.slot_count": "2"}),
])
def test_nova_tags_become_e_tags(nova: str, tags: dict[str, str]) -> None:
    assert parse_device_spec([nova])[0].extra == tags


def test_nova_tags_may_be_written_bare_in_extra() -> None:
    spec = parse_pci_information([{"extra": {"trusted": "true", "physical_network": "p"}}])[0]
    assert spec.extra == {"e.trusted": "true", "e.physical_network": "p"}


def test_an_entry_without_match_takes_everything() -> None:
    assert taken(parse_pci_information([{"extra": {"e.all": "yes"}}])) == [d.address
                                                                          for d in HOST]
    assert taken(parse_device_spec(["{}"])) == [d.address for d in HOST]


# --- what match selects ----------------------------------------------------------------

@pytest.mark.parametrize(("match", "expected"), [
    ({"vendor_id": "0x10DE"}, [GPU.address]),
    ({"product_id": "154[cd]"}, [d.address for d in VFS0 + VFS1]),
    ({"product_id": "re:(1572|a808)"}, [PF0.address, PF1.address, DISK.address]),
    ({"dev_type": "type-PF"}, [PF0.address, PF1.address]),
    ({"dev_type": "VF", "address": "*:0a:0a.*"}, [d.address for d in VFS1]),
    ({"dev_class": "03*"}, [GPU.address]),
    ({"dev_class": "0x010802"}, [DISK.address]),
    ({"driver": "vfio-pci"}, [*[d.address for d in VFS1], GPU.address]),
    ({"numa_node": 1}, [GPU.address]),
    ({"numa_node": "*"}, [d.address for d in HOST if d is not DISK]),  # DISK has no node
    ({"address": ".1"}, [PF1.address, VFS0[1].address, VFS1[1].address]),
    ({"address": {"bus": "[8c]"}}, [GPU.address, DISK.address]),
    ({"address": "re:0000:0a:0[0a]\\.0"}, [PF0.address, VFS1[0].address]),
])
def test_match_keys(match: dict[str, object], expected: list[str]) -> None:
    assert taken(parse_pci_information([{"match": match}])) == expected


def test_a_pf_address_also_selects_its_vfs() -> None:
    specs = parse_pci_information([{"match": {"vendor_id": "8086", "address": "0000:0a:00.0"}}])
    assert taken(specs) == [PF0.address, *[vf.address for vf in VFS0]]


def test_a_vf_still_needs_its_own_product_to_match() -> None:
    specs = parse_pci_information([{"match": {"product_id": "154c", "address": "0000:0a:00.0"}}])
    assert taken(specs) == [vf.address for vf in VFS0]
    specs = parse_pci_information([{"match": {"product_id": "1572", "address": "0000:0a:00.0"}}])
    assert taken(specs) == [PF0.address]


def test_only_a_single_pf_address_selects_vfs() -> None:
    specs = parse_pci_information([{"match": {"address": "*:0a:00.0"}}])
    assert taken(specs) == [PF0.address]


@pytest.mark.parametrize(("written", "attr"), sorted(SYNONYMS.items()))
def test_a_match_takes_every_synonym_a_flavor_takes(written: str, attr: str) -> None:
    # One table for whitelist matches, flavors and pool attributes.
    devices = [PciDevice("0000:0a:00.0", "8086", "1572", DevType.PF, netdev="ens1f0"),
               PciDevice("0000:0b:00.0", "8086", "1581", netdev="ens2f0")]
    value = {"product_id": "1572", "netdev": "ens1f0", "dev_type": "type-PF"}.get(attr)
    if value is None:  # a tag: not something a match selects by
        with pytest.raises(InvalidInputError, match=f"match key {written!r} is not"):
            parse_pci_information([{"match": {written: "p1"}}])
        return
    specs = parse_pci_information([{"match": {written: value}}])
    assert [d.address for d in devices if specs[0].selects(d)] == ["0000:0a:00.0"]


def test_a_pf_netdev_selects_its_vfs_as_novas_devname_does() -> None:
    specs = parse_device_spec(['{"devname": "ens1f1", "physical_network": "p2"}'])
    assert taken(specs) == [PF1.address, *[vf.address for vf in VFS1]]
    specs = parse_pci_information([{"match": {"netdev": "ens1f*"}}])
    assert taken(specs) == [PF0.address, PF1.address]  # a glob names no single PF


# --- decisions -------------------------------------------------------------------------

def test_first_matching_entry_wins_and_exclude_says_why() -> None:
    specs = parse_pci_information([
        {"match": {"address": "0000:0a:00.0", "product_id": "154c"},
         "extra": {"physical_network": "physnet1"}, "exclude": ["0000:0a:02.1"]},
        {"match": {"vendor_id": "8086", "product_id": "154c"},
         "extra": {"physical_network": "physnet2"}},
        {"match": {"vendor_id": "10de"}, "extra": {"e.group": "gpu"}},
    ])
    decisions = {d.device.address: d for d in Whitelist(specs).apply(HOST)}
    assert decisions[VFS0[0].address].tags == {"e.physical_network": "physnet1"}
    assert decisions[VFS0[0].address].entry == 1
    assert decisions[VFS0[1].address].taken is False
    assert decisions[VFS0[1].address].entry == 1
    assert decisions[VFS0[1].address].reason == "excluded by entry 1 (0000:0a:02.1)"
    assert decisions[VFS1[0].address].tags == {"e.physical_network": "physnet2"}
    assert decisions[VFS1[0].address].reason == "taken by entry 2"
    assert decisions[GPU.address].device.tags == {"e.group": "gpu"}
    assert decisions[DISK.address].reason == "no entry matched"
    assert decisions[DISK.address].entry is None
    assert [d.device.address for d in Whitelist(specs).apply(HOST)] == [d.address for d in HOST]


def test_decisions_are_copies() -> None:
    specs = parse_pci_information([{"match": {"vendor_id": "10de"}, "extra": {"e.g": "1"}}])
    decision = Whitelist(specs).apply([GPU])[0]
    decision.device.tags["e.other"] = "x"
    assert GPU.tags == {}
    assert decision.tags == {"e.g": "1"}
    assert Whitelist(specs).apply([GPU])[0].tags == {"e.g": "1"}


def test_an_empty_whitelist_takes_nothing() -> None:
    assert {d.reason for d in Whitelist([]).apply(HOST)} == {"no entry matched"}


@given(st.lists(st.sampled_from(HOST), unique_by=lambda d: d.address))
def test_taken_devices_are_the_taken_decisions(devices: list[PciDevice]) -> None:
    whitelist = Whitelist(parse_pci_information([
        {"match": {"vendor_id": "8086"}, "exclude": [".1"]},
        {"match": {"dev_class": "03*"}}]))
    decisions = whitelist.apply(devices)
    assert len(decisions) == len(devices)
    assert [d.address for d in whitelist.taken(devices)] == [
        d.device.address for d in decisions if d.taken]
    for decision in decisions:
        assert decision.taken == (decision.reason.startswith("taken"))


# --- errors quote the entry and say where ------------------------------------------------

@pytest.mark.parametrize(("entries", "message"), [
    ([{"match": {"vendr_id": "8086"}}],
     "pci_information entry 1: match key 'vendr_id' is not a device attribute; "
     "did you mean 'vendor_id'?\n  {\"match\": {\"vendr_id\": \"8086\"}}"),
    ([{}, {"match": {"vendor_id": "80x86"}}],
     "pci_information entry 2: match vendor_id '80x86' is not a hex number"),
    ([{"match": {"vendor_id": 8086}}], "quoted hex string"),
    ([{"match": {"product_id": "(1"}}], "match product_id: regex '(1' is not valid"),
    ([{"match": {"address": "0000:0a:00.8"}}],
     "match address: function 8 in '0000:0a:00.8' is out of range: at most 7"),
    ([{"match": {"device_id": "1", "product_id": "1"}}], "names 'product_id' twice"),
    ([{"match": "8086"}], "match must be a table"),
    ([{"extras": {}}], "unknown key 'extras'; an entry has match, extra and exclude "
                       "(did you mean 'extra'?)"),
    ([{"extra": {"group": "x"}}], "extra tag 'group' is not an extra tag name"),
    ([{"extra": {"e.physical_network": "a", "physical_network": "b"}}], "given twice"),
    ([{"extra": {"trusted": "maybe"}}], "tag trusted: 'maybe' is not a boolean"),
    ([{"extra": {"e.x": ["a"]}}], "tag e.x: value ['a'] must be a string"),
    ([{"extra": {"e.x": "v" * 300}}], "at most 255 are stored"),
    ([{"exclude": "0000:0a:00.1"}], "exclude must be a list of address patterns"),
    ([{"exclude": ["0000:0a:00.9"]}], "exclude item 1: function 9"),
    (["vendor_id=8086"], "an entry must be a table"),
])
def test_toml_errors(entries: list[object], message: str) -> None:
    with pytest.raises(DeviceSpecError) as raised:
        parse_pci_information(entries)  # type: ignore[arg-type]
    assert message in str(raised.value)


@pytest.mark.parametrize(("lines", "message"), [
    (['{"vendor_id": "8086", '], "device_spec line 1: not valid JSON: Expecting property "
                                 "name enclosed in double quotes at column 23"),
    (['{}', "{'vendor_id': '8086'}"], "device_spec line 2: not valid JSON"),
    (['"8086"'], "device_spec line 1: a device spec must be a JSON object"),
    (['[{"vendor_id": "8086"}, {"address": "x:y"}]'],
     "device_spec line 1 item 2: match address: bus 'x'"),
    (['{"address": "0000:0a:00.1", "devname": "eth0"}'], "either address or devname"),
    (['{"vendor_id": "8086", "trusted": "sometimes"}'], "not a boolean"),
    (['{"vendor_id": "8086", "bad key": "x"}'], "'e.bad key' is not an extra tag name"),
])
def test_nova_errors(lines: list[str], message: str) -> None:
    with pytest.raises(DeviceSpecError) as raised:
        parse_device_spec(lines)
    assert message in str(raised.value)


@pytest.mark.parametrize(("text", "message"), [
    ("[ {'vendor_id': '8086'} ]", "pci_information pair 1: expected a pair of dicts"),
    ("[ {'vendor_id': '8086'}, {}, {} ]", "pci_information pair 2: expected a pair"),
    ("[ {'vendor_id': '8086' ", "not a list of {match}, {extra} pairs (SyntaxError"),
    ("[ {'vendor_id': open('x')}, {} ]", "not a list of {match}, {extra} pairs"),
    ("[ {'vendor_id': 'v1'}, {'e.QAclass': '1'} ]", "match vendor_id 'v1' is not a hex"),
])
def test_oneliner_errors(text: str, message: str) -> None:
    with pytest.raises(DeviceSpecError) as raised:
        parse_seed_oneliner(text)
    assert message in str(raised.value)


def test_errors_carry_origin_and_source_for_the_agent_to_show() -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_pci_information([{"match": {"vendor_id": "8086"}}, {"match": {"bus": "0a"}}])
    error = raised.value
    assert isinstance(error, DeviceSpecError)
    assert error.origin == "pci_information entry 2"
    assert error.source == '{"match": {"bus": "0a"}}'
