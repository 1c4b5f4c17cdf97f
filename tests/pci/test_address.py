"""PCI addresses and address patterns."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passthru.errors import InvalidInputError
from passthru.pci.address import AddressPattern, PciAddress

domains = st.integers(0, 0xFFFF)
buses = st.integers(0, 0xFF)
slots = st.integers(0, 0x1F)
functions = st.integers(0, 7)
addresses = st.builds(PciAddress, domains, buses, slots, functions)


@pytest.mark.parametrize(("text", "canonical"), [
    ("0000:0a:00.1", "0000:0a:00.1"),
    ("0000:0A:00.1", "0000:0a:00.1"),
    ("0a:00.1", "0000:0a:00.1"),
    ("ffff:ff:1f.7", "ffff:ff:1f.7"),
    ("1:2:3.4", "0001:02:03.4"),
    ("  0000:81:00.0\n", "0000:81:00.0"),
])
def test_parse_gives_the_canonical_address(text: str, canonical: str) -> None:
    assert str(PciAddress.parse(text)) == canonical


@pytest.mark.parametrize(("text", "message"), [
    ("0000:0a:00.8", "function 8 in '0000:0a:00.8' is out of range: at most 7"),
    ("0000:0a:20.0", "slot 20 in '0000:0a:20.0' is out of range: at most 1f"),
    ("0000:100:00.0", "bus 100 in '0000:100:00.0' is out of range: at most ff"),
    ("10000:0a:00.0", "domain 10000 in '10000:0a:00.0' is out of range: at most ffff"),
    ("0000:0a:00", "malformed; expected DDDD:BB:SS.F, e.g. 0000:0a:00.1"),
    ("00.1", "malformed; expected DDDD:BB:SS.F"),
    ("1:0000:0a:00.1", "malformed"),
    ("0000:0g:00.1", "bus '0g' in '0000:0g:00.1' is not hex; expected DDDD:BB:SS.F"),
    ("0000:0a:.1", "slot '' in '0000:0a:.1' is not hex"),
    ("0000:0a:00.-1", "function '-1'"),
    ("", "malformed"),
])
def test_parse_errors_say_what_was_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        PciAddress.parse(text)
    assert message in str(raised.value)


def test_parse_refuses_what_is_not_text() -> None:
    with pytest.raises(InvalidInputError, match="not text"):
        PciAddress.parse(10)  # type: ignore[arg-type]


@given(addresses)
def test_canonical_address_round_trips(address: PciAddress) -> None:
    text = str(address)
    assert PciAddress.parse(text) == address
    assert PciAddress.parse(text.upper()) == address
    assert len(text) == 12


@given(buses, slots, functions)
def test_short_form_is_domain_zero(bus: int, slot: int, function: int) -> None:
    assert PciAddress.parse(f"{bus:x}:{slot:x}.{function}") == PciAddress(0, bus, slot, function)


@pytest.mark.parametrize(("pattern", "address", "expected"), [
    ("0000:0a:00.1", "0000:0a:00.1", True),
    ("0000:0a:00.1", "0000:0a:00.2", False),
    ("0000:0A:00.1", "0000:0a:00.1", True),
    ("*:0a:00.*", "0001:0a:00.7", True),
    ("*:0a:00.*", "0000:0b:00.0", False),
    (":0a:00.", "0000:0a:00.3", True),
    (":0a:00.", "0000:0a:01.3", False),
    (".5", "0000:0a:00.5", True),
    (".5", "0000:0a:00.4", False),
    ("0000:0a:*.*", "0000:0a:1f.7", True),
    ("0000:0a:*.*", "0001:0a:1f.7", False),
    ("0a:00.1", "0003:0a:00.1", True),  # as in Nova, a left-out domain is any domain
    ("0a:00", "0000:0a:00.6", True),
    ("*", "0000:81:00.0", True),
    ("*:*:*.*", "0000:81:00.0", True),
    ("re:0000:0a:0[0-3]\\.[0-7]", "0000:0a:02.4", True),
    ("re:0000:0a:0[0-3]\\.[0-7]", "0000:0a:04.4", False),
    ("re:0000:0A:.*", "0000:0a:10.1", True),
    ("re:0a:00", "0000:0a:00.1", False),  # a regex matches the whole address
])
def test_pattern_forms(pattern: str, address: str, expected: bool) -> None:
    assert AddressPattern.parse(pattern).matches(address) is expected


@pytest.mark.parametrize(("fields", "address", "expected"), [
    ({"domain": ".*", "bus": "02", "slot": "01", "function": "[0-2]"}, "0000:02:01.2", True),
    ({"domain": ".*", "bus": "02", "slot": "01", "function": "[0-2]"}, "0000:02:01.3", False),
    ({"bus": "0[ab]"}, "0000:0b:1f.0", True),
    ({"bus": "0[ab]"}, "0000:0c:1f.0", False),
    ({"bus": "0"}, "0000:0c:00.0", True),  # each field matches from its start, as in Nova
    ({"bus": "0A"}, "0000:0a:00.0", True),
    ({"domain": "0000", "bus": "0a", "slot": "00", "function": "1"}, "0000:0a:00.1", True),
    ({"domain": "0000", "bus": "0a", "slot": "00", "function": "1"}, "0000:0a:00.2", False),
    ({"domain": "0", "bus": "a", "slot": "0", "function": "1"}, "0000:0a:00.1", True),
    ({}, "0000:0a:00.1", True),
])
def test_dict_form(fields: dict[str, str], address: str, expected: bool) -> None:
    assert AddressPattern.parse(fields).matches(address) is expected


@pytest.mark.parametrize(("pattern", "single"), [
    ("0000:0a:00.0", "0000:0a:00.0"),
    ("0000:0A:0.0", "0000:0a:00.0"),
    ({"domain": "0000", "bus": "0a", "slot": "00", "function": "0"}, "0000:0a:00.0"),
    ("0a:00.0", None),
    ("*:0a:00.0", None),
    ("re:0000:0a:00\\.0", None),
    ({"domain": "0000", "bus": "0a", "slot": "00"}, None),
    ({"domain": "0000", "bus": "0a", "slot": "00", "function": "[01]"}, None),
])
def test_single_address_is_known_only_when_every_field_is_given(
    pattern: str | dict[str, str], single: str | None
) -> None:
    found = AddressPattern.parse(pattern).single
    assert (None if found is None else str(found)) == single


@pytest.mark.parametrize(("pattern", "message"), [
    ("0000:0a:00.8", "function 8 in '0000:0a:00.8' is out of range: at most 7"),
    ("*:0a:20.*", "slot 20 in '*:0a:20.*' is out of range: at most 1f"),
    ("*:1ff:*.*", "bus 1ff in '*:1ff:*.*' is out of range: at most ff"),
    ("fffff:*:*.*", "domain fffff in 'fffff:*:*.*' is out of range: at most ffff"),
    ("*:0a:2?.*", "slot '2?' in address pattern '*:0a:2?.*' is neither hex nor '*'"),
    ("1:0000:0a:00.1", "too many ':' fields; expected DDDD:BB:SS.F"),
    ("", "address pattern is empty"),
    ("re:(0000", "regex '(0000' is not valid"),
    ("re:(a)\\1", "regex '(a)\\\\1' is not valid"),
    ({"bus": "0a", "slots": "1"}, "unknown field 'slots'"),
    ({"bus": "(0a"}, "bus: regex '(0a' is not valid"),
    ({"bus": 10}, "bus must be a non-empty regex string"),
    ({"bus": ""}, "bus must be a non-empty regex string"),
    ({"domain": "0", "bus": "0a", "slot": "20", "function": "1"}, "slot 20"),
    (12, "neither text nor a {domain, bus, slot, function} dict"),
])
def test_pattern_errors(pattern: object, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        AddressPattern.parse(pattern)  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_matching_a_malformed_address_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="malformed"):
        AddressPattern.parse("*").matches("0a:00")


@given(addresses, st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
       addresses)
def test_glob_selects_exactly_the_addresses_agreeing_on_given_fields(
    template: PciAddress, given_fields: tuple[bool, ...], address: PciAddress
) -> None:
    wanted = (template.domain, template.bus, template.slot, template.function)
    parts = [f"{value:x}" if keep else "*"
             for value, keep in zip(wanted, given_fields, strict=True)]
    pattern = AddressPattern.parse(f"{parts[0]}:{parts[1]}:{parts[2]}.{parts[3]}")
    actual = (address.domain, address.bus, address.slot, address.function)
    expected = all(not keep or w == a
                   for w, a, keep in zip(wanted, actual, given_fields, strict=True))
    assert pattern.matches(str(address)) is expected
    assert (pattern.single is not None) is all(given_fields)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"domain": "0x0000", "bus": "0x3b", "slot": "0x02", "function": "0x1"}, "0000:3b:02.1"),
    ({"domain": "0", "bus": "59", "slot": "2", "function": "1"}, "0000:3b:02.1"),
    ({"bus": "010", "slot": "0x1f"}, "0000:0a:1f.0"),
])
def test_libvirt_spellings(fields: dict[str, str], expected: str) -> None:
    address = PciAddress.from_libvirt(fields)
    assert str(address) == expected
    assert PciAddress.from_libvirt(address.libvirt_attrs()) == address


@pytest.mark.parametrize(("fields", "problem"), [
    ({"function": "8"}, "function='8' is out of range: at most 7"),
    ({"bus": "0xgg"}, "bus='0xgg' is not a number"),
])
def test_libvirt_spelling_errors(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(problem)):
        PciAddress.from_libvirt(fields)
