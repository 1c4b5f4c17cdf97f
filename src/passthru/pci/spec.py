"""`pci_information`: which of a host's devices are offered, and the tags they carry.

The seed extends Nova's whitelist to `pci_information = [ {pci-regex}, {pci-extra-attrs} ]`.
Three spellings reach us and all become the same `DeviceSpec`s:

- host config tables: `[[pci_information]]` with `match`, `extra` and `exclude`;
- Nova's `[pci] device_spec` JSON lines, verbatim (a line may hold a list of specs);
- the seed's one-liner `[ {match}, {extra}, {match}, {extra} ... ]` (single quotes fine).

`match` keys (every one given must match; a missing device value never matches):

    vendor_id, product_id   hex ids; `device_id` is accepted for product_id (the seed's word)
    address                 a PCI address pattern (see passthru.pci.address)
    dev_type                type-PCI, type-PF or type-VF
    dev_class               six hex digits, e.g. 030000 (globs such as 03* for a class)
    driver, netdev          the bound driver, the network interface (`devname` in Nova)
    numa_node               the device's NUMA node

Values are literal, glob or regex (see passthru.pci.match). A VF matches an `address`
that names its PF's single address, or a `netdev` literal naming its PF's interface, as in
Nova; its own vendor and product must still match.

`extra` tags are `e.<name>`; bare `physical_network` means `e.physical_network`. Nova's
other tags (`trusted`, `remote_managed`, `managed`, `live_migratable`, `one_time_use`,
`resource_class`, `traits`) may be written bare and become `e.trusted` etc.; the boolean
ones are stored as "true" or "false". In Nova's JSON any other bare key is a tag too, as
Nova reads it.

`exclude` lists address patterns of devices the entry leaves to the host. The first entry
whose `match` selects a device decides: the device is taken with that entry's tags, unless
the entry's `exclude` names it.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any

from passthru.errors import InvalidInputError
from passthru.pci.address import AddressPattern
from passthru.pci.device import (
    BOOLEAN_TAGS,
    PLACEMENT_TAGS,
    PciDevice,
    boolean_word,
    canonical_attr,
)
from passthru.pci.match import MatchKind, ValueMatcher, compile_attribute, did_you_mean, tag_key

#: How each match key reads a device (attrgetter where the field is the value: it is the
#: inner loop of every whitelist pass).
_READERS: dict[str, Callable[[PciDevice], str | None]] = {
    "vendor_id": attrgetter("vendor_id"),
    "product_id": attrgetter("product_id"),
    "dev_type": attrgetter("dev_type"),
    "dev_class": lambda d: d.dev_class or None,
    "driver": attrgetter("driver"),
    "netdev": attrgetter("netdev"),
    "numa_node": lambda d: None if d.numa_node is None else str(d.numa_node),
}
MATCH_KEYS: tuple[str, ...] = ("address", *_READERS)

#: Nova's tags that may be written without the `e.` prefix in every spelling.
NOVA_TAGS = BOOLEAN_TAGS | PLACEMENT_TAGS | {"physical_network"}
#: Nova's device_spec keys that match devices; every other key there is a tag.
NOVA_MATCH_KEYS = frozenset({"vendor_id", "product_id", "address", "devname"})

_ENTRY_KEYS = ("match", "extra", "exclude")
MAX_TAG_VALUE = 255


class DeviceSpecError(InvalidInputError):
    """A `pci_information` entry that cannot be understood; says which and where."""

    def __init__(self, origin: str, source: str, problem: str) -> None:
        self.origin = origin
        self.source = source
        self.problem = problem
        super().__init__(f"{origin}: {problem}\n  {source}")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One `pci_information` entry. `origin` says where it was written, `source` quotes it."""

    match: Mapping[str, ValueMatcher]
    address: AddressPattern | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    exclude: tuple[AddressPattern, ...] = ()
    origin: str = "pci_information"
    source: str = ""
    _checks: tuple[tuple[Callable[[PciDevice], str | None], ValueMatcher], ...] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checks = tuple((_READERS[key], matcher) for key, matcher in self.match.items()
                       if key != "netdev")
        object.__setattr__(self, "_checks", checks)

    def accepts_vendor(self, vendor_id: str) -> bool:
        """Whether a device of this vendor could be selected at all."""
        matcher = self.match.get("vendor_id")
        return matcher is None or matcher.matches(vendor_id)

    def selects(self, device: PciDevice, parent: PciDevice | None = None) -> bool:
        """Whether `match` selects the device; `parent` is a VF's PF, when known."""
        for read, matcher in self._checks:
            if not matcher.matches(read(device)):
                return False
        return self._selects_address(device) and self._selects_netdev(device, parent)

    def _selects_address(self, device: PciDevice) -> bool:
        pattern = self.address
        if pattern is None or pattern.matches(device.address):
            return True
        return (pattern.single is not None and device.parent_addr is not None
                and pattern.matches(device.parent_addr))

    def _selects_netdev(self, device: PciDevice, parent: PciDevice | None) -> bool:
        matcher = self.match.get("netdev")
        if matcher is None or matcher.matches(device.netdev):
            return True
        return (matcher.kind is MatchKind.LITERAL and parent is not None
                and matcher.matches(parent.netdev))

    def excluded_by(self, device: PciDevice) -> AddressPattern | None:
        """The `exclude` pattern naming the device, if any."""
        return next((p for p in self.exclude if p.matches(device.address)), None)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the whitelist did with one device, and why. `entry` counts from 1."""

    device: PciDevice
    taken: bool
    entry: int | None
    tags: dict[str, str]
    reason: str


class Whitelist:
    """An ordered list of `DeviceSpec`s; the first whose `match` selects a device decides."""

    def __init__(self, specs: Iterable[DeviceSpec]) -> None:
        self.specs: tuple[DeviceSpec, ...] = tuple(specs)
        # Hosts hold hundreds of devices from a handful of vendors: deciding once per
        # vendor which entries could apply skips most entries for most devices.
        self._by_vendor: dict[str, tuple[tuple[int, DeviceSpec], ...]] = {}

    def apply(self, devices: Sequence[PciDevice]) -> list[Decision]:
        """A decision for every device, in order; taken devices carry their entry's tags."""
        by_address = {device.address: device for device in devices}
        return [self._decide(device, by_address.get(device.parent_addr or ""))
                for device in devices]

    def taken(self, devices: Sequence[PciDevice]) -> list[PciDevice]:
        """The devices offered for passthrough, tagged."""
        return [decision.device for decision in self.apply(devices) if decision.taken]

    def _candidates(self, vendor_id: str) -> tuple[tuple[int, DeviceSpec], ...]:
        candidates = self._by_vendor.get(vendor_id)
        if candidates is None:
            candidates = tuple((number, spec) for number, spec in enumerate(self.specs, 1)
                               if spec.accepts_vendor(vendor_id))
            self._by_vendor[vendor_id] = candidates
        return candidates

    def _decide(self, device: PciDevice, parent: PciDevice | None) -> Decision:
        for number, spec in self._candidates(device.vendor_id):
            if not spec.selects(device, parent):
                continue
            pattern = spec.excluded_by(device)
            if pattern is not None:
                return Decision(replace(device), False, number, {},
                                f"excluded by entry {number} ({pattern.text})")
            tags = dict(spec.extra)
            return Decision(replace(device, tags=dict(tags)), True, number, tags,
                            f"taken by entry {number}")
        return Decision(replace(device), False, None, {}, "no entry matched")


# --- building specs -------------------------------------------------------------------

def _quote(entry: object) -> str:
    try:
        return json.dumps(entry, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(entry)


def _tag_value(key: str, value: object, what: str) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | str):
        text = str(value)
    else:
        raise InvalidInputError(f"{what}: value {value!r} must be a string")
    if len(text) > MAX_TAG_VALUE:
        raise InvalidInputError(f"{what}: value is {len(text)} characters long; "
                                f"at most {MAX_TAG_VALUE} are stored")
    if key.removeprefix("e.") in BOOLEAN_TAGS:
        word = boolean_word(text)
        if word is None:
            raise InvalidInputError(f"{what}: {value!r} is not a boolean; write 'true' or 'false'")
        text = word
    return text


def _address(what: str, value: object) -> AddressPattern:
    try:
        return AddressPattern.parse(value)  # type: ignore[arg-type]
    except InvalidInputError as error:
        raise InvalidInputError(f"{what}: {error}") from None


class _SpecBuilder:
    """Turns the parts of one entry into a DeviceSpec, naming the entry in every error."""

    def __init__(self, origin: str, source: str) -> None:
        self.origin = origin
        self.source = source

    def fail(self, problem: str) -> DeviceSpecError:
        return DeviceSpecError(self.origin, self.source, problem)

    def build(self, match: object, tags: Mapping[str, str], exclude: object = ()) -> DeviceSpec:
        try:
            matchers, address = self._match(self.mapping(match, "match"))
            excluded = self._exclude(exclude)
        except DeviceSpecError:
            raise
        except InvalidInputError as error:
            raise self.fail(str(error)) from None
        return DeviceSpec(matchers, address, dict(tags), excluded, self.origin, self.source)

    def mapping(self, value: object, part: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(f"{part} must be a table of key = value, got {_quote(value)}")
        return value

    def _match(
        self, match: Mapping[str, Any]
    ) -> tuple[dict[str, ValueMatcher], AddressPattern | None]:
        matchers: dict[str, ValueMatcher] = {}
        address: AddressPattern | None = None
        for written, value in match.items():
            key = canonical_attr(written)
            if key not in MATCH_KEYS:
                raise self.fail(f"match key {written!r} is not a device attribute; "
                                + did_you_mean(str(written), MATCH_KEYS))
            if key in matchers or (key == "address" and address is not None):
                raise self.fail(f"match names {key!r} twice (once as {written!r})")
            if key == "address":
                address = _address(f"match {written}", value)
            else:
                matchers[key] = compile_attribute(key, value, what=f"match {written}")
        return matchers, address

    def extra(self, extra: Mapping[str, Any]) -> dict[str, str]:
        """Tags written as `extra`: `e.<name>`, or one of Nova's tag names bare."""
        tags: dict[str, str] = {}
        for written, value in extra.items():
            name = str(written)
            key = f"e.{name}" if name in NOVA_TAGS else name
            self._add_tag(tags, name, key, value)
        return tags

    def nova_tags(self, nova: Mapping[str, Any]) -> dict[str, str]:
        """Nova's spelling: every key that does not match devices is a tag."""
        tags: dict[str, str] = {}
        for written, value in nova.items():
            key = written if written.startswith("e.") else f"e.{written}"
            self._add_tag(tags, written, key, value)
        return tags

    def _add_tag(self, tags: dict[str, str], written: str, key: str, value: object) -> None:
        try:
            key = tag_key(key, what="extra tag")
            if key in tags:
                raise self.fail(f"tag {key!r} is given twice (once as {written!r})")
            tags[key] = _tag_value(key, value, f"tag {written}")
        except DeviceSpecError:
            raise
        except InvalidInputError as error:
            raise self.fail(str(error)) from None

    def _exclude(self, exclude: object) -> tuple[AddressPattern, ...]:
        if isinstance(exclude, str | Mapping) or not isinstance(exclude, Sequence):
            raise self.fail(f"exclude must be a list of address patterns, "
                            f"e.g. ['0000:0a:10.1'], got {_quote(exclude)}")
        return tuple(_address(f"exclude item {number}", pattern)
                     for number, pattern in enumerate(exclude, start=1))


def parse_pci_information(entries: Sequence[Mapping[str, Any]]) -> list[DeviceSpec]:
    """Host config `[[pci_information]]` tables: `{match = {...}, extra = {...}, exclude = [...]}`.

    An entry without `match` selects every device.
    """
    specs: list[DeviceSpec] = []
    for number, entry in enumerate(entries, start=1):
        builder = _SpecBuilder(f"pci_information entry {number}", _quote(entry))
        if not isinstance(entry, Mapping):
            raise builder.fail("an entry must be a table with match, extra and exclude")
        unknown = [key for key in entry if key not in _ENTRY_KEYS]
        if unknown:
            raise builder.fail(f"unknown key {unknown[0]!r}; an entry has match, extra "
                               "and exclude (" + did_you_mean(str(unknown[0]), _ENTRY_KEYS)
                               + ")")
        tags = builder.extra(builder.mapping(entry.get("extra"), "extra"))
        specs.append(builder.build(entry.get("match"), tags, entry.get("exclude", ())))
    return specs


def parse_device_spec(lines: Sequence[str]) -> list[DeviceSpec]:
    """Nova's `[pci] device_spec` lines: JSON objects (or lists of them) that mix match
    keys (`vendor_id`, `product_id`, `address`, `devname`) with tags (every other key)."""
    specs: list[DeviceSpec] = []
    for line_number, line in enumerate(lines, start=1):
        origin = f"device_spec line {line_number}"
        try:
            loaded = json.loads(line)
        except json.JSONDecodeError as error:
            raise DeviceSpecError(origin, line, f"not valid JSON: {error.msg} at column "
                                  f"{error.colno}") from None
        except TypeError:
            raise DeviceSpecError(origin, repr(line), "a device_spec line must be text") from None
        except RecursionError:  # the decoder recurses per nested array or object
            raise DeviceSpecError(origin, line[:60], "nests JSON arrays or objects too deeply "
                                  "to read; a device spec is one flat object") from None
        items = loaded if isinstance(loaded, list) else [loaded]
        for item_number, item in enumerate(items, start=1):
            where = f"{origin} item {item_number}" if isinstance(loaded, list) else origin
            try:
                specs.append(_nova_spec(item, where))
            except RecursionError:  # quoting a value just shallow enough to decode
                raise DeviceSpecError(where, line[:60], "nests JSON arrays or objects too "
                                      "deeply to read; a device spec is one flat object"
                                      ) from None
    return specs


def _nova_spec(item: object, origin: str) -> DeviceSpec:
    builder = _SpecBuilder(origin, _quote(item))
    if not isinstance(item, dict):
        raise builder.fail("a device spec must be a JSON object, e.g. "
                           '{"vendor_id": "8086", "product_id": "154c"}')
    if "address" in item and "devname" in item:
        raise builder.fail("give either address or devname, not both")
    match = {key: value for key, value in item.items() if key in NOVA_MATCH_KEYS}
    tags = builder.nova_tags({k: v for k, v in item.items() if k not in NOVA_MATCH_KEYS})
    return builder.build(match, tags)


def parse_seed_oneliner(text: str) -> list[DeviceSpec]:
    """The seed's `[ {pci-regex}, {pci-extra-attrs} ]`, with as many pairs as needed.

    Python or JSON quoting is fine; pairs may also be nested, `[[{...}, {...}], ...]`, and
    the seed's outer braces `{ {...}, {...} }` are read as brackets.
    """
    origin = "pci_information"
    try:
        loaded = ast.literal_eval(_outer_braces_as_brackets(text.strip()))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as error:
        raise DeviceSpecError(origin, text, "not a list of {match}, {extra} pairs "
                              f"({type(error).__name__}: {error})") from None
    items = list(loaded) if isinstance(loaded, list | tuple) else [loaded]
    pairs = items if all(isinstance(i, list | tuple) for i in items) and items \
        else [items[i:i + 2] for i in range(0, len(items), 2)]
    specs: list[DeviceSpec] = []
    for number, pair in enumerate(pairs, start=1):
        builder = _SpecBuilder(f"pci_information pair {number}", _quote(pair))
        if len(pair) != 2 or not all(isinstance(part, dict) for part in pair):
            raise builder.fail("expected a pair of dicts: {match}, {extra} "
                               "(write {} for no extra tags)")
        specs.append(builder.build(pair[0], builder.extra(pair[1])))
    return specs


def _outer_braces_as_brackets(text: str) -> str:
    inner = text[1:-1].strip()
    if text.startswith("{") and text.endswith("}") and inner.startswith("{"):
        return f"[{inner}]"
    return text

