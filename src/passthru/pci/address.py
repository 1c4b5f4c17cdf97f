"""PCI addresses (`DDDD:BB:SS.F`) and the patterns that select them.

An address pattern takes Nova's forms, so existing `device_spec` lines work unchanged:

- a glob: each field is hex or `*`, and fields left out or empty match anything —
  `0000:0a:00.1`, `*:0a:00.*`, `0000:0a:*.*`, `:0a:00.`, `0a:00.1` (any domain), `.5`;
- `re:<regex>`: an RE2 regex that must match the whole canonical address, e.g.
  `re:0000:0a:0[0-3]\\.[0-7]`;
- a dict `{"domain", "bus", "slot", "function"}` of regexes, each matched (as in Nova)
  from the start of its field; fields left out match anything. A dict whose four fields
  are plain hex names a single address.

Matching ignores case throughout: `0A` and `0a` are the same bus.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from passthru.errors import InvalidInputError
from passthru.pci.match import REGEX_PREFIX, compile_regex

EXPECTED = "expected DDDD:BB:SS.F, e.g. 0000:0a:00.1"

#: (name, largest value, digits in the canonical form) for each field, in address order.
FIELDS: tuple[tuple[str, int, int], ...] = (
    ("domain", 0xFFFF, 4),
    ("bus", 0xFF, 2),
    ("slot", 0x1F, 2),
    ("function", 0x7, 1),
)
FIELD_NAMES: tuple[str, ...] = tuple(name for name, _, _ in FIELDS)

_HEX = frozenset("0123456789abcdefABCDEF")
_ANY = "*"


def _field_value(name: str, limit: int, digits: str, text: str) -> int:
    """One field's value, checked against the PCI limit for that field."""
    if not digits or any(c not in _HEX for c in digits):
        raise InvalidInputError(f"{name} {digits!r} in {text!r} is not hex; {EXPECTED}")
    value = int(digits, 16)
    if value > limit:
        raise InvalidInputError(
            f"{name} {digits} in {text!r} is out of range: at most {limit:x}")
    return value


@dataclass(frozen=True, slots=True, order=True)
class PciAddress:
    """One PCI function's address; `str()` gives the canonical `0000:0a:00.1`."""

    domain: int
    bus: int
    slot: int
    function: int

    @staticmethod
    def parse(text: str) -> PciAddress:
        """`DDDD:BB:SS.F`, or `BB:SS.F` in domain 0; hex digits in either case."""
        if not isinstance(text, str):
            raise InvalidInputError(f"PCI address {text!r} is not text; {EXPECTED}")
        return _parse_address(text)

    @staticmethod
    def from_libvirt(fields: Mapping[str, str | None]) -> PciAddress:
        """From libvirt's spelling: the four fields as `0x`-prefixed hex (its XML
        attributes) or decimal (node device capabilities, hand-written XML)."""
        values = []
        for name, limit, _ in FIELDS:
            text = (fields.get(name) or "0").strip()
            try:
                value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
            except ValueError:
                raise InvalidInputError(f"PCI address {name}={text!r} is not a number") from None
            if not 0 <= value <= limit:
                raise InvalidInputError(
                    f"PCI address {name}={text!r} is out of range: at most {limit:x}")
            values.append(value)
        return PciAddress(*values)

    @property
    def routing_id(self) -> int:
        """Bus, slot and function as PCIe's 16-bit routing ID (bus << 8 | slot << 3 |
        function), the number SR-IOV's VF offset and stride count in."""
        return self.bus << 8 | self.slot << 3 | self.function

    @staticmethod
    def from_routing_id(domain: int, rid: int) -> PciAddress:
        """The function at routing ID `rid` of PCI domain `domain`."""
        if not 0 <= rid <= 0xFFFF:
            raise InvalidInputError(f"routing ID {rid:#x} in domain {domain:04x} is past "
                                    "bus ff: no such PCI function")
        return PciAddress(domain, rid >> 8, rid >> 3 & 0x1F, rid & 7)

    def libvirt_attrs(self) -> dict[str, str]:
        """The attributes of libvirt's `<address>` element for this function."""
        return {"domain": f"0x{self.domain:04x}", "bus": f"0x{self.bus:02x}",
                "slot": f"0x{self.slot:02x}", "function": f"0x{self.function:x}"}

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


@functools.lru_cache(maxsize=65536)
def _parse_address(text: str) -> PciAddress:
    stripped = text.strip()
    head, dot, function = stripped.partition(".")
    parts = head.split(":")
    if not dot or len(parts) not in (2, 3):
        raise InvalidInputError(f"PCI address {text!r} is malformed; {EXPECTED}")
    if len(parts) == 2:
        parts.insert(0, "0")
    parts.append(function)
    values = [_field_value(name, limit, digits, text)
              for (name, limit, _), digits in zip(FIELDS, parts, strict=True)]
    return PciAddress(*values)


@dataclass(frozen=True, slots=True)
class AddressPattern:
    """Selects PCI addresses; `text` is the pattern as written (a dict as JSON).

    `single` is the one address the pattern names when it names exactly one (every field
    given as hex): a PF's single address also selects its VFs in `pci_information`.
    """

    text: str
    single: PciAddress | None
    _test: Callable[[PciAddress], bool] = field(repr=False, compare=False)

    @staticmethod
    def parse(value: str | Mapping[str, str]) -> AddressPattern:
        if isinstance(value, Mapping):
            return _parse_dict(value)
        if not isinstance(value, str):
            raise InvalidInputError(
                f"address pattern {value!r} is neither text nor a "
                "{domain, bus, slot, function} dict")
        return _parse_text(value)

    def matches(self, address: str) -> bool:
        """Whether the address (any accepted spelling) is selected."""
        if not isinstance(address, str):
            raise InvalidInputError(f"PCI address {address!r} is not text; {EXPECTED}")
        return self._test(_parse_address(address))


@functools.lru_cache(maxsize=1024)
def _parse_text(text: str) -> AddressPattern:
    if text.startswith(REGEX_PREFIX):
        regex = compile_regex(text[len(REGEX_PREFIX):], what=f"address pattern {text!r}",
                              ignore_case=True)
        return AddressPattern(text, None, lambda a: regex.fullmatch(str(a)) is not None)
    if text.strip() == "":
        raise InvalidInputError(
            "address pattern is empty; leave 'address' out to match every address, "
            "or write '*'")
    head, _, function = text.partition(".")
    parts = head.split(":")
    if len(parts) > 3:
        raise InvalidInputError(f"address pattern {text!r} has too many ':' fields; {EXPECTED}")
    parts = [_ANY] * (3 - len(parts)) + parts + [function]
    wanted: list[int | None] = []
    for (name, limit, _), digits in zip(FIELDS, parts, strict=True):
        digits = digits.strip()
        if digits in ("", _ANY):
            wanted.append(None)
        elif any(c not in _HEX for c in digits):
            raise InvalidInputError(
                f"{name} {digits!r} in address pattern {text!r} is neither hex nor '*'; "
                "for ranges write 're:<regex>' or a {domain, bus, slot, function} dict")
        else:
            wanted.append(_field_value(name, limit, digits, text))
    return _fields_pattern(text, wanted)


def _fields_pattern(text: str, wanted: list[int | None]) -> AddressPattern:
    if None not in wanted:
        single = PciAddress(*wanted)  # type: ignore[arg-type]
        return AddressPattern(text, single, lambda a: a == single)
    checks = [(index, value) for index, value in enumerate(wanted) if value is not None]

    def test(address: PciAddress) -> bool:
        fields = (address.domain, address.bus, address.slot, address.function)
        return all(fields[index] == value for index, value in checks)

    return AddressPattern(text, None, test)


def _parse_dict(spec: Mapping[str, Any]) -> AddressPattern:
    text = json.dumps(dict(spec), sort_keys=True, default=str)
    unknown = sorted(set(spec) - set(FIELD_NAMES))
    if unknown:
        raise InvalidInputError(
            f"address pattern {text}: unknown field {unknown[0]!r}; "
            "the fields are domain, bus, slot and function")
    for name in spec:
        if not isinstance(spec[name], str) or spec[name] == "":
            raise InvalidInputError(
                f"address pattern {text}: {name} must be a non-empty regex string, "
                f"got {spec[name]!r}")
    if len(spec) == len(FIELDS) and all(set(v) <= _HEX for v in spec.values()):
        wanted: list[int | None] = [_field_value(name, limit, spec[name], text)
                                    for name, limit, _ in FIELDS]
        return _fields_pattern(text, wanted)
    regexes = [
        (index, width, compile_regex(spec[name], what=f"address pattern {text}, {name}",
                                     ignore_case=True))
        for index, (name, _, width) in enumerate(FIELDS) if name in spec
    ]

    def test(address: PciAddress) -> bool:
        fields = (address.domain, address.bus, address.slot, address.function)
        return all(regex.match(f"{fields[index]:0{width}x}") is not None
                   for index, width, regex in regexes)

    return AddressPattern(text, None, test)
