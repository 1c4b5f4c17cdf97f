"""What the CLI reads from its own arguments, before any request is sent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passthru.cli.assignments import AssignmentError, parse_assignments
from passthru.cli.nics import parse_nic
from passthru.cli.nova_conf import alias_lines
from passthru.controller.settings import split_listen
from passthru.errors import InvalidInputError, PassthruError


@pytest.mark.parametrize("words", [
    ["vendor_id=8086", "product_id=0001"],
    ["vendor_id=8086", "product_id:", "0001"],
    ["vendor_id=", "8086", "product_id=0001"],
])
def test_the_seeds_three_spellings_of_a_pair_read_the_same(words: list[str]) -> None:
    assert parse_assignments(words) == {"vendor_id": "8086", "product_id": "0001"}


def test_a_value_may_hold_colons_semicolons_and_equals() -> None:
    assert parse_assignments(["pci_passthrough:pci_flavor=", "1:IntelGPU,NvGPU;1:QA;"]) == {
        "pci_passthrough:pci_flavor": "1:IntelGPU,NvGPU;1:QA;"}
    assert parse_assignments(["e.x=a=b"]) == {"e.x": "a=b"}


@pytest.mark.parametrize(("words", "message"), [
    (["vendor_id"], "'vendor_id' is not KEY=VALUE"),
    (["vendor_id="], "'vendor_id' has no value"),
    (["=8086"], "has no key before '='"),
])
def test_bad_pairs_say_what_to_write(words: list[str], message: str) -> None:
    with pytest.raises(AssignmentError, match=message):
        parse_assignments(words)


keys = st.from_regex(r"[a-z][a-z_.:]{0,12}", fullmatch=True)
values = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12)


@given(st.dictionaries(keys, values, max_size=5))
def test_glued_pairs_read_back_exactly(pairs: dict[str, str]) -> None:
    assert parse_assignments([f"{k}={v}" for k, v in pairs.items()]) == pairs


def test_nics() -> None:
    assert parse_nic("net-id=prod,vnic-type=direct,pci-flavor=phyX_NIC") == {
        "uuid": "prod", "vnic_type": "direct", "pci_flavor": "phyX_NIC"}
    assert parse_nic("net_id=prod,pci_flavor=1:phyX_NIC;") == {
        "uuid": "prod", "pci_flavor": "phyX_NIC"}
    assert parse_nic("port-id=p1") == {"port": "p1"}


@pytest.mark.parametrize(("text", "message"), [
    ("net-id=a,port-id=b", "give net-id=NETWORK or port-id=PORT"),
    ("vnic-type=direct", "give net-id=NETWORK or port-id=PORT"),
    ("net-id=a,vnic-type=sriov", "vnic-type 'sriov' is not one of normal, direct"),
    ("net-id=a,colour=red", "unknown key 'colour'"),
    ("net-id=a,pci-flavor=2:X", "must name one PCI flavor"),
    ("net-id=a,pci-flavor=A,B", "'B' is not KEY=VALUE"),
    ("net-id", "'net-id' is not KEY=VALUE"),
])
def test_bad_nics_are_explained(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_nic(text)


NOVA_CONF = """
[DEFAULT]
alias = {"name": "not-pci"}

[pci]
# alias = {"name": "commented"}
alias = {"name": "QuickAssist", "product_id": "0443", "vendor_id": "8086"}
alias={"name":"GPU","vendor_id":"10de","numa_policy":"required"}

[libvirt]
alias = {"name": "elsewhere"}
"""


def test_alias_lines_come_from_the_pci_section_only() -> None:
    assert alias_lines(NOVA_CONF) == [
        (7, '{"name": "QuickAssist", "product_id": "0443", "vendor_id": "8086"}'),
        (8, '{"name":"GPU","vendor_id":"10de","numa_policy":"required"}'),
    ]
    assert alias_lines('alias = {"name": "bare"}\n') == [(1, '{"name": "bare"}')]


def test_listen_addresses() -> None:
    assert split_listen("127.0.0.1:8774") == ("127.0.0.1", 8774)
    assert split_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("8774", "host:", "host:99999", ":80x"):
        with pytest.raises(PassthruError, match="is not HOST:PORT"):
            split_listen(bad)
