"""PCI flavors: names, keys, matching pools and devices, and Nova aliases."""

from __future__ import annotations

import pytest

from passthru.errors import InvalidInputError
from passthru.pci.device import DevType, PciDevice
from passthru.pci.flavor import (
    FLAVOR_ATTRS_NAME,
    FLAVOR_ATTRS_UUID,
    PciFlavor,
    flavor_key,
    parse_nova_alias,
    validate_flavor_name,
)
from passthru.pci.pool import Pool, build_pools
from passthru.pci.request import NumaPolicy

GPU1 = PciDevice("0000:81:00.0", "8086", "0001", dev_class="030000")
GPU2 = PciDevice("0000:82:00.0", "8086", "0002", dev_class="030000")
QA = [PciDevice(f"0000:{0x90 + n:02x}:00.0", v, p, tags={"e.QAclass": c})
      for n, (v, p, c) in enumerate([("1001", "000a", "1"), ("1001", "000b", "2"),
                                     ("1002", "000b", "3")])]
VF = PciDevice("0000:0a:02.0", "8086", "154c", DevType.VF, parent_addr="0000:0a:00.0",
               tags={"e.physical_network": "physnet1"})


def pool_of(device: PciDevice, attrs: tuple[str, ...] = ("vendor_id", "product_id", "e.*")
            ) -> Pool:
    (pool,) = build_pools([device], attrs)
    return pool


def test_the_seeds_reserved_flavor() -> None:
    assert (FLAVOR_ATTRS_UUID, FLAVOR_ATTRS_NAME) == ("0", "_flavor_attrs")


@pytest.mark.parametrize("name", ["bigGPU", "phyX_NIC", "QA13", "Intel.NIC", "a-b", "x" * 255])
def test_valid_names(name: str) -> None:
    assert validate_flavor_name(name) == name
    assert PciFlavor(name).name == name


@pytest.mark.parametrize(("name", "message"), [
    ("", "is empty"),
    ("big GPU", "'big GPU' is not valid: start with a letter"),
    ("1:bigGPU", "not valid"),
    ("a,b", "not valid"),
    ("0", "not valid"),
    ("_flavor_attrs", "is reserved: names starting with '_' are passthru's own"),
    ("x" * 256, "is 256 characters; at most 255"),
])
def test_invalid_names(name: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        validate_flavor_name(name)
    assert message in str(raised.value)


@pytest.mark.parametrize(("key", "canonical"), [
    ("vendor_id", "vendor_id"),
    ("product_id", "product_id"),
    ("device_id", "product_id"),
    ("dev_type", "dev_type"),
    ("device_type", "dev_type"),
    ("dev_class", "dev_class"),
    ("physical_network", "e.physical_network"),
    ("e.group", "e.group"),
])
def test_keys(key: str, canonical: str) -> None:
    assert flavor_key(key) == canonical


@pytest.mark.parametrize(("key", "message"), [
    ("address", "'address' is refused: flavors are global to the cloud, but address differs "
                "from host to host"),
    ("host", "host differs from host to host"),
    ("devname", "'devname' is refused: flavors are global to the cloud, but devname differs"),
    ("numa_node", "NUMA nodes are per host; ask for NUMA affinity with the flavor extra spec "
                  "hw:pci_numa_affinity_policy"),
    ("description", "is the flavor's own field"),
    ("vendor", "'vendor' is not an attribute hosts expose; use vendor_id, product_id, "
               "dev_type, dev_class or an extra tag 'e.<name>' (did you mean 'vendor_id'?)"),
    ("e.", "not an extra tag name"),
])
def test_refused_keys_say_why(key: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        PciFlavor("bigGPU", {key: "x"})
    assert message in str(raised.value)
    assert "PCI flavor bigGPU" in str(raised.value)


@pytest.mark.parametrize(("spec", "message"), [
    ({"vendor_id": "80x86"}, "PCI flavor f: vendor_id '80x86' is not a hex number"),
    ({"e.QAclass": "(1|3"}, "PCI flavor f: e.QAclass: regex '(1|3' is not valid"),
    ({"dev_type": "type-XX"}, "not a device type"),
    ({"e.group": 1}, "e.group = 1 must be a string"),
    ({"product_id": "1", "device_id": "2"}, "'product_id' is given twice"),
])
def test_bad_values(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        PciFlavor("f", spec)  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_spec_keys_come_out_canonical_and_values_as_written() -> None:
    flavor = PciFlavor("x", {"physical_network": "p", "device_id": "0xa"}, "d", "u-1")
    assert flavor.spec == {"e.physical_network": "p", "product_id": "0xa"}
    assert (flavor.description, flavor.uuid) == ("d", "u-1")
    assert flavor == PciFlavor("x", {"e.physical_network": "p", "product_id": "0xa"}, "d", "u-1")


@pytest.mark.parametrize(("spec", "device", "expected"), [
    ({"vendor_id": "8086", "product_id": "0001"}, GPU1, True),
    ({"vendor_id": "8086", "product_id": "0001"}, GPU2, False),
    ({"vendor_id": "0x8086", "product_id": "0x1"}, GPU1, True),
    ({"vendor_id": "8086", "product_id": "000[1-2]"}, GPU2, True),
    ({"e.QAclass": "1"}, QA[0], True),
    ({"e.QAclass": "(1|3)"}, QA[2], True),
    ({"e.QAclass": "(1|3)"}, QA[1], False),
    ({"physical_network": "physnet1"}, VF, True),
    ({"e.physical_network": "physnet*"}, VF, True),
    ({"e.physical_network": "physnet2"}, VF, False),
    ({"dev_type": "type-VF"}, VF, True),
    ({"dev_type": "VF"}, GPU1, False),
    ({"e.group": "gpu"}, GPU1, False),  # a pool without the tag does not match
    ({}, GPU1, True),
])
def test_matches_pool_and_device(spec: dict[str, str], device: PciDevice, expected: bool) -> None:
    flavor = PciFlavor("f", spec)
    assert flavor.matches_pool(pool_of(device)) is expected
    assert flavor.matches_device(device) is expected


def test_a_pool_lacking_an_attribute_the_flavor_names_does_not_match() -> None:
    grouped_by_tag_only = pool_of(QA[0], ("e.QAclass",))
    assert PciFlavor("qa", {"e.QAclass": "1"}).matches_pool(grouped_by_tag_only)
    assert not PciFlavor("qa", {"e.QAclass": "1", "vendor_id": "1001"}).matches_pool(
        grouped_by_tag_only)
    assert PciFlavor("qa", {"e.QAclass": "1", "vendor_id": "1001"}).matches_device(QA[0])


def test_dev_class_is_matched_when_hosts_pool_by_it() -> None:
    pool = pool_of(GPU1, ("vendor_id", "dev_class"))
    assert PciFlavor("gpu", {"dev_class": "03*"}).matches_pool(pool)
    assert not PciFlavor("gpu", {"dev_class": "020000"}).matches_pool(pool)


def test_flavors_may_overlap() -> None:
    pools = build_pools(QA, ("e.QAclass",))
    qa1, qa13 = PciFlavor("QA1", {"e.QAclass": "1"}), PciFlavor("QA13", {"e.QAclass": "(1|3)"})
    assert [p.attrs["e.QAclass"] for p in pools if qa1.matches_pool(p)] == ["1"]
    assert [p.attrs["e.QAclass"] for p in pools if qa13.matches_pool(p)] == ["1", "3"]


# --- Nova aliases -----------------------------------------------------------------------

def test_a_full_nova_alias() -> None:
    alias = parse_nova_alias(
        '{"name": "QuickAssist", "vendor_id": "8086", "product_id": "0443", '
        '"device_type": "type-PCI", "numa_policy": "required", "capability_type": "pci"}')
    assert alias.flavor.name == "QuickAssist"
    assert alias.flavor.spec == {"vendor_id": "8086", "product_id": "0443",
                                 "dev_type": "type-PCI"}
    assert alias.numa_policy is NumaPolicy.REQUIRED
    assert alias.ignored == ()
    assert alias.flavor.matches_device(PciDevice("0000:3d:00.0", "8086", "0443"))


def test_a_nova_alias_without_policy_is_legacy_and_reports_placement_keys() -> None:
    alias = parse_nova_alias('{"name": " a1 ", "vendor_id": "10de", "product_id": "1eb8", '
                             '"resource_class": "CUSTOM_T4", "traits": "A,B"}')
    assert alias.flavor.name == "a1"
    assert alias.numa_policy is NumaPolicy.LEGACY
    assert alias.ignored == ("resource_class", "traits")


@pytest.mark.parametrize(("line", "message"), [
    ('{"name": "a", ', "[pci] alias is not valid JSON"),
    ('["a"]', "must be a JSON object"),
    ('{"vendor_id": "8086"}', "the alias has no name"),
    ('{"name": "a", "vendorid": "8086"}', "unknown key 'vendorid'; did you mean 'vendor_id'?"),
    ('{"name": "a", "numa_policy": "strict"}', "unknown NUMA policy 'strict'"),
    ('{"name": "a", "numa_policy": 1}', "numa_policy 1 must be a string"),
    ('{"name": "a", "device_type": "type-XX"}', "not a device type"),
    ('{"name": "a", "capability_type": "usb"}', "capability_type 'usb' is not supported"),
    ('{"name": "a b"}', "PCI flavor name 'a b' is not valid"),
    ('{"name": 3}', "PCI flavor name 3 must be text"),
])
def test_nova_alias_errors_quote_the_line(line: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_nova_alias(line)
    assert message in str(raised.value)
    assert line in str(raised.value)


@pytest.mark.parametrize(("written", "matches"), [
    ("true", True), ("True", True), ("yes", True), ("1", True), ("on", True),
    ("no", False), ("False", False), ("0", False), ("t*", True)])
def test_a_boolean_tag_matches_in_every_spelling_nova_takes(written: str, matches: bool
                                                           ) -> None:
    trusted = PciDevice("0000:3b:02.0", "8086", "154c", dev_type=DevType.VF,
                        tags={"e.trusted": "true"})  # as the whitelist stores it
    flavor = PciFlavor("trustedVF", {"e.trusted": written})
    assert flavor.matches_device(trusted) is matches
    assert flavor.matches_pool(build_pools([trusted])[0]) is matches


def test_placement_only_tags_split_no_pool_of_every_tag() -> None:
    def vf(function: int, **tags: str) -> PciDevice:
        return PciDevice(f"0000:3b:02.{function}", "8086", "154c", dev_type=DevType.VF,
                         tags={"e.group": "a", **tags})

    pools = build_pools([vf(0, **{"e.resource_class": "CUSTOM_A", "e.traits": "X"}),
                         vf(1, **{"e.resource_class": "CUSTOM_B"}), vf(2)])
    assert [(pool.attrs, pool.count) for pool in pools] == [
        ({"vendor_id": "8086", "product_id": "154c", "e.group": "a"}, 3)]
    assert len(build_pools([vf(0), vf(1, **{"e.group": "b"})])) == 2
