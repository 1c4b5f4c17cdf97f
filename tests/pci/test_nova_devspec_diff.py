"""Differential test: our reading of Nova's `[pci] device_spec` against Nova's own code.

The same generated spec lines and hosts go to `passthru.pci.spec` and to Nova's
`nova.pci.whitelist.Whitelist` (built on `nova.pci.devspec.PciDeviceSpec`); both must take
the same devices, by the same entry, with the same tags, and refuse the same specs.

Nova decides whether a spec's single address names a PF by reading this machine's sysfs
(`nova.pci.utils.is_physical_function`). The generated hosts exist only in the test, so
that one probe is replaced by a lookup in the generated host; every other line that runs
is Nova's. `devname` specs are not generated: Nova resolves them through sysfs network
interfaces, which no generated host has.

Where we differ on purpose, `test_deliberate_difference_*` shows both behaviours and says why.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from passthru.errors import InvalidInputError
from passthru.pci.device import DevType, PciDevice
from passthru.pci.spec import Whitelist, parse_device_spec

with warnings.catch_warnings():
    # Importing Nova warns about eventlet and other deprecations that are not ours.
    warnings.simplefilter("ignore")
    from nova import exception as nova_exception
    from nova.pci import utils as nova_utils
    from nova.pci import whitelist as nova_whitelist

DOMAINS = ("0000", "0001")
BUSES = ("0a", "0b", "81")
SLOTS = ("00", "01", "10", "1f")
FUNCTIONS = tuple(str(f) for f in range(8))
VENDORS = ("8086", "15b3", "10de")
PRODUCTS = ("154c", "1572", "1017")


# --- generated hosts -------------------------------------------------------------------

@st.composite
def hosts(draw: st.DrawFn) -> list[PciDevice]:
    grid = st.tuples(st.sampled_from(DOMAINS), st.sampled_from(BUSES), st.sampled_from(SLOTS),
                     st.sampled_from(FUNCTIONS)).map(lambda f: f"{f[0]}:{f[1]}:{f[2]}.{f[3]}")
    addresses = draw(st.lists(grid, min_size=1, max_size=10, unique=True))
    pf_count = draw(st.integers(0, min(2, len(addresses))))
    pfs, others = addresses[:pf_count], addresses[pf_count:]
    devices = [PciDevice(a, draw(st.sampled_from(VENDORS)), draw(st.sampled_from(PRODUCTS)),
                         DevType.PF) for a in pfs]
    for address in others:
        parent = draw(st.sampled_from([None, *pfs]))
        devices.append(PciDevice(
            address, draw(st.sampled_from(VENDORS)), draw(st.sampled_from(PRODUCTS)),
            DevType.PCI if parent is None else DevType.VF, parent_addr=parent))
    return devices


# --- generated Nova specs --------------------------------------------------------------

def id_values(ids: tuple[str, ...]) -> st.SearchStrategy[str]:
    literal = st.sampled_from(ids)
    return st.one_of(st.just("*"), literal, literal.map(lambda i: "0x" + i),
                     literal.map(str.upper))


@st.composite
def address_globs(draw: st.DrawFn) -> str:
    def field(choices: tuple[str, ...]) -> str:
        return draw(st.one_of(st.sampled_from(["*", ""]), st.sampled_from(choices),
                              st.sampled_from(choices).map(lambda v: v.lstrip("0") or "0")))

    domain, bus, slot = field(DOMAINS), field(BUSES), field(SLOTS)
    head = draw(st.sampled_from([f"{domain}:{bus}:{slot}", f"{bus}:{slot}", slot, ""]))
    function = draw(st.sampled_from(["*", "", *FUNCTIONS]))
    return draw(st.sampled_from([f"{head}.{function}", head])) or "*"


#: Values both sides must refuse: out of range, not hex, malformed, a broken regex.
BROKEN: tuple[tuple[str, object], ...] = (
    ("vendor_id", "10000"), ("vendor_id", ""), ("product_id", "xyz"),
    ("address", "*:0a:20.*"), ("address", "0000:100:00.0"), ("address", "10000:0a:00.0"),
    ("address", ".8"), ("address", "1:0000:0a:00.0"), ("address", "0000:0g:00.0"),
    ("address", {"bus": "(0a"}),
)


@st.composite
def address_dicts(draw: st.DrawFn) -> dict[str, str]:
    regexes = {
        "domain": (*DOMAINS, ".*", "000[01]", "0"),
        "bus": (*BUSES, ".*", "0[ab]", "0", "8", "[0-9a-f]+"),
        "slot": (*SLOTS, ".*", "[01]0", "1"),
        "function": (*FUNCTIONS, ".*", "[0-2]", "[5-7]"),
    }
    keys = draw(st.lists(st.sampled_from(list(regexes)), unique=True))
    fields = {key: draw(st.sampled_from(regexes[key])) for key in keys}
    # Four short hex fields are a deliberate difference (see the test below).
    assume(not (len(fields) == 4 and all(_is_hex(v) for v in fields.values())
                and any(len(fields[k]) != len(v[0]) for k, v in regexes.items())))
    return fields


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


@st.composite
def nova_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["vendor_id"] = draw(id_values(VENDORS))
    if draw(st.booleans()):
        spec["product_id"] = draw(id_values(PRODUCTS))
    address = draw(st.one_of(st.none(), address_globs(), address_dicts()))
    if address is not None:
        spec["address"] = address
    if draw(st.booleans()):
        spec["physical_network"] = draw(st.sampled_from(["physnet1", "physnet2"]))
    if draw(st.integers(0, 4)) == 0:
        spec["trusted"] = "true"
    if draw(st.integers(0, 9)) == 0:
        key, value = draw(st.sampled_from(BROKEN))
        spec[key] = value
    return spec


@st.composite
def device_spec_lines(draw: st.DrawFn) -> list[str]:
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        specs = draw(st.lists(nova_specs(), min_size=1, max_size=2))
        lines.append(json.dumps(specs if len(specs) > 1 else specs[0]))
    return lines


# --- running Nova ------------------------------------------------------------------------

@contextmanager
def nova_sees(devices: list[PciDevice]) -> Iterator[None]:
    """Nova's sysfs probe for PFs, answered from the generated host."""
    pfs = {d.address for d in devices if d.dev_type is DevType.PF}

    def is_physical_function(domain: str, bus: str, slot: str, function: str) -> bool:
        return f"{domain}:{bus}:{slot}.{function}" in pfs

    with mock.patch.object(nova_utils, "is_physical_function", is_physical_function):
        yield


def nova_decisions(lines: list[str], devices: list[PciDevice]
                   ) -> list[tuple[int, dict[str, str]] | None]:
    """For each device: (entry number, tags) of the first spec taking it, or None."""
    with nova_sees(devices):
        whitelist = nova_whitelist.Whitelist(lines)
        decisions: list[tuple[int, dict[str, str]] | None] = []
        for device in devices:
            found = whitelist.device_assignable({
                "vendor_id": device.vendor_id, "product_id": device.product_id,
                "address": device.address, "parent_addr": device.parent_addr})
            if found is None:
                decisions.append(None)
                continue
            number = next(n for n, s in enumerate(whitelist.specs, 1) if s is found)
            decisions.append((number, {f"e.{k}": str(v) for k, v in found.get_tags().items()}))
    return decisions


def our_decisions(lines: list[str], devices: list[PciDevice]
                  ) -> list[tuple[int, dict[str, str]] | None]:
    whitelist = Whitelist(parse_device_spec(lines))
    return [(d.entry, d.tags) if d.taken and d.entry is not None else None
            for d in whitelist.apply(devices)]


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(device_spec_lines(), hosts())
def test_we_take_what_nova_takes(lines: list[str], devices: list[PciDevice]) -> None:
    try:
        expected = nova_decisions(lines, devices)
    except nova_exception.NovaException:
        with pytest.raises(InvalidInputError):
            parse_device_spec(lines)
        return
    assert our_decisions(lines, devices) == expected


def test_the_generators_reach_the_interesting_cases() -> None:
    """A PF's address taking its VFs, tags, and refusals all happen in known examples."""
    pf = PciDevice("0000:0a:00.0", "8086", "1572", DevType.PF)
    vf = PciDevice("0000:0a:01.1", "8086", "154c", DevType.VF, parent_addr=pf.address)
    lines = ['{"address": "0000:0a:00.0", "physical_network": "physnet1"}',
             '{"address": {"bus": "0[ab]", "function": "[0-2]"}, "vendor_id": "8086"}']
    assert nova_decisions(lines, [pf, vf]) == our_decisions(lines, [pf, vf]) == [
        (1, {"e.physical_network": "physnet1"}), (1, {"e.physical_network": "physnet1"})]
    with pytest.raises(nova_exception.NovaException):
        nova_decisions(['{"address": "*:0a:20.*"}'], [pf])
    with pytest.raises(InvalidInputError):
        parse_device_spec(['{"address": "*:0a:20.*"}'])


# --- deliberate differences ----------------------------------------------------------------

def test_deliberate_difference_four_short_hex_fields_name_one_address() -> None:
    """Nova reads {"domain": "0", "bus": "a", ...} as one address only if sysfs says that
    address is a PF, and as prefix regexes otherwise (so slot "1" matches "1f", not "01").
    We always read four hex fields as one address: a spec must not change meaning with
    the host's sysfs."""
    line = '{"address": {"domain": "0", "bus": "0a", "slot": "1", "function": "0"}}'
    device = PciDevice("0000:0a:1f.0", "8086", "154c")
    assert nova_decisions([line], [device]) == [(1, {})]
    assert our_decisions([line], [device]) == [None]
    intended = PciDevice("0000:0a:01.0", "8086", "154c")
    assert nova_decisions([line], [intended]) == [None]
    assert our_decisions([line], [intended]) == [(1, {})]


def test_deliberate_difference_dict_regexes_ignore_case() -> None:
    """Nova's dict regexes are case-sensitive against lower-case fields, so "0A" never
    matches; every other address form ignores case, so ours do too."""
    line = '{"address": {"bus": "0A"}}'
    device = PciDevice("0000:0a:00.0", "8086", "154c")
    assert nova_decisions([line], [device]) == [None]
    assert our_decisions([line], [device]) == [(1, {})]


def test_deliberate_difference_ids_take_globs_and_regexes() -> None:
    """Nova takes only '*' or one hex id; the seed's pci_information matches ids by
    pattern, so we take globs and regexes too."""
    line = '{"product_id": "15[0-9a-f]c"}'
    with pytest.raises(nova_exception.NovaException):
        nova_decisions([line], [])
    assert our_decisions([line], [PciDevice("0000:0a:00.0", "8086", "154c")]) == [(1, {})]


@pytest.mark.parametrize(("line", "why"), [
    ('{"address": {"bus": "0a", "slots": "1"}}', "a mistyped field would silently widen"),
    ('{"address": {"bus": "(?=0)0a"}}', "RE2 has no look-arounds: nothing can backtrack"),
    ('{"address": ""}', "an empty address is more likely a mistake than 'any'"),
])
def test_deliberate_difference_we_refuse_what_nova_lets_through(line: str, why: str) -> None:
    device = PciDevice("0000:0a:01.0", "8086", "154c")
    assert nova_decisions([line], [device]) == [(1, {})], why
    with pytest.raises(InvalidInputError):
        parse_device_spec([line])


def test_deliberate_difference_boolean_tags_are_normalised() -> None:
    """Nova keeps `trusted` as written; we store "true"/"false" so that pools and PCI
    flavors compare one spelling."""
    line = '{"vendor_id": "8086", "trusted": "yes"}'
    device = PciDevice("0000:0a:01.0", "8086", "154c")
    assert nova_decisions([line], [device]) == [(1, {"e.trusted": "yes"})]
    assert our_decisions([line], [device]) == [(1, {"e.trusted": "true"})]
