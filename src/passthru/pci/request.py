"""PCI requests: what a VM asks for, parsed from flavor extra specs and ports.

Two spellings reach us. The seed's `pci_passthrough:pci_flavor` puts the count first and
lists alternatives, `1:IntelGPU,NvGPU;1:intelQuickAssist` (count omitted means 1, a
trailing `;` and spaces are fine). Nova's `pci_passthrough:alias` puts the count after a
single name, `IntelNIC:2, QA:1`. Both become the same `PciRequest`s.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from passthru.errors import InvalidInputError
from passthru.pci.device import DevType

SEED_SPEC_KEY = "pci_passthrough:pci_flavor"
#: Devices a VM gets if a host has them and goes without otherwise (the seed's "start
#: with PCI if PCI is available"), in the seed's syntax.
SOFT_SPEC_KEY = "pci_passthrough:pci_flavor_if_available"
NOVA_ALIAS_KEY = "pci_passthrough:alias"
NUMA_POLICY_KEY = "hw:pci_numa_affinity_policy"

#: A PCI flavor name: a letter, then letters, digits, '_', '.' or '-', so that it fits in
#: a request such as `1:bigGPU,bigGPU2;1:QA` (`flavor.validate_flavor_name` says why a
#: name is not one).
FLAVOR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
#: The most devices one request may ask for. Counts are ASCII digits only (`str.isdigit`
#: takes '²' and '①', which `int` then refuses) and never more than this, so that a count
#: always fits the store's 32-bit column and no scheduler search is asked for millions.
MAX_COUNT = 1024


class NumaPolicy(StrEnum):
    """Nova's PCI NUMA affinity policies."""

    REQUIRED = "required"
    PREFERRED = "preferred"
    LEGACY = "legacy"
    SOCKET = "socket"


class RequestSource(StrEnum):
    FLAVOR = "flavor"
    PORT = "port"


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class PciRequest:
    """`count` devices, each from any one of the `alternatives` PCI flavors.

    Empty `alternatives` means any device (a port on a physical network that names no PCI
    flavor: the seed's plan B). `physical_network` and `dev_type` narrow further. A `soft`
    request is met if possible and never blocks a boot.
    """

    count: int
    alternatives: tuple[str, ...]
    request_id: str = field(default_factory=_new_id)
    source: RequestSource = RequestSource.FLAVOR
    numa_policy: NumaPolicy = NumaPolicy.LEGACY
    physical_network: str | None = None
    dev_type: DevType | None = None
    port_id: str | None = None
    soft: bool = False

    def describe(self) -> str:
        """A person's reading of the request, for error messages."""
        noun = "device" if self.count == 1 else "devices"
        text = f"{self.count} {noun}"
        if self.alternatives:
            text += f" of pci flavor {' or '.join(self.alternatives)}"
        if self.dev_type is not None:
            text += f" ({self.dev_type})"
        if self.physical_network is not None:
            text += f" on physical_network {self.physical_network}"
        return text

    @property
    def criteria(self) -> Criteria:
        return Criteria(tuple(sorted(set(self.alternatives))), self.physical_network,
                        self.dev_type)


@dataclass(frozen=True, slots=True)
class Criteria:
    """What decides which pools serve a request: its alternatives, physical network and
    device type (its count and NUMA policy do not). Requests of equal criteria are served
    by the same pool signatures."""

    alternatives: tuple[str, ...]
    physical_network: str | None
    dev_type: DevType | None


class RequestSyntaxError(InvalidInputError):
    """A request string that cannot be parsed; the message points into the string."""

    def __init__(self, text: str, position: int, problem: str, *, key: str = "") -> None:
        self.text = text
        self.position = position
        self.problem = problem
        label = f"{key} " if key else ""
        prefix = f"{label}'"
        pointer = " " * (len(prefix) + position) + "^"
        super().__init__(f"{problem}\n  {prefix}{text}'\n  {pointer}")


def parse_numa_policy(value: str | None) -> NumaPolicy:
    if value is None or value == "":
        return NumaPolicy.LEGACY
    try:
        return NumaPolicy(value.strip().lower())
    except ValueError:
        choices = ", ".join(p.value for p in NumaPolicy)
        raise InvalidInputError(
            f"unknown NUMA policy {value!r}: expected one of {choices}") from None


def _parse_count(text: str, token: str, start: int, key: str) -> int:
    if not (token.isascii() and token.isdigit()):
        raise RequestSyntaxError(text, start, f"count {token!r} is not a whole number "
                                 "(digits 0-9)", key=key)
    if len(token.lstrip("0")) > len(str(MAX_COUNT)) or int(token) > MAX_COUNT:
        raise RequestSyntaxError(text, start, f"count {token} is more than the {MAX_COUNT} "
                                 "devices a request may ask for", key=key)
    count = int(token)
    if count <= 0:
        raise RequestSyntaxError(text, start, f"count must be at least 1, got {count}", key=key)
    return count


def _parse_name(text: str, token: str, start: int, key: str) -> str:
    if not FLAVOR_NAME.fullmatch(token):
        problem = "a PCI flavor name is missing" if not token else (
            f"{token!r} is not a PCI flavor name (a letter, then letters, digits, '_', '.', "
            "'-')")
        raise RequestSyntaxError(text, start, problem, key=key)
    return token


def _segments(text: str, separator: str, offset: int = 0) -> list[tuple[str, int]]:
    """Split on `separator`, keeping each stripped piece with its position in `text`."""
    pieces: list[tuple[str, int]] = []
    position = offset
    for raw in text.split(separator):
        stripped = raw.strip()
        lead = len(raw) - len(raw.lstrip())
        pieces.append((stripped, position + lead))
        position += len(raw) + len(separator)
    return pieces


def parse_seed_spec(text: str, *, key: str = SEED_SPEC_KEY) -> list[PciRequest]:
    """The seed's `count:flavor,flavor;count:flavor` syntax."""
    requests: list[PciRequest] = []
    groups = _segments(text, ";")
    if groups and groups[-1][0] == "" and len(groups) > 1:
        groups.pop()  # a trailing ';' ends the list
    for group, start in groups:
        if not group:
            raise RequestSyntaxError(text, start, "an empty request (two ';' in a row?)", key=key)
        if ":" in group:
            count_text, names_text = group.split(":", 1)
            count = _parse_count(text, count_text.strip(), start, key)
            names_start = start + len(count_text) + 1
        else:
            count, names_text, names_start = 1, group, start
        names = tuple(_parse_name(text, name, pos, key)
                      for name, pos in _segments(names_text, ",", names_start))
        requests.append(PciRequest(count=count, alternatives=names))
    return requests


def parse_nova_alias_spec(text: str, *, key: str = NOVA_ALIAS_KEY) -> list[PciRequest]:
    """Nova's `alias:count, alias:count` syntax: one name per request."""
    requests: list[PciRequest] = []
    for item, start in _segments(text, ","):
        name_text, _, count_text = item.partition(":")
        name = _parse_name(text, name_text.strip(), start, key)
        count = 1
        if count_text:
            count = _parse_count(text, count_text.strip(), start + len(name_text) + 1, key)
        requests.append(PciRequest(count=count, alternatives=(name,)))
    return requests


def check_flavor_names(
    requests: Sequence[PciRequest], known: Collection[str], *, where: str = SEED_SPEC_KEY
) -> None:
    """Refuse requests that name PCI flavors nobody defined."""
    for request in requests:
        unknown = [name for name in request.alternatives if name not in known]
        if unknown:
            hint = ", ".join(sorted(known)) or "none defined yet"
            raise InvalidInputError(
                f"{where} names unknown PCI flavor {unknown[0]!r}; "
                f"known PCI flavors: {hint} (create it with passthru pci-flavor-create)")


def requests_from_extra_specs(extra_specs: Mapping[str, str]) -> list[PciRequest]:
    """The PCI requests a flavor's extra specs ask for, with their NUMA policy."""
    policy = parse_numa_policy(extra_specs.get(NUMA_POLICY_KEY))
    requests: list[PciRequest] = []
    if SEED_SPEC_KEY in extra_specs:
        requests += parse_seed_spec(extra_specs[SEED_SPEC_KEY])
    if NOVA_ALIAS_KEY in extra_specs:
        requests += parse_nova_alias_spec(extra_specs[NOVA_ALIAS_KEY])
    if SOFT_SPEC_KEY in extra_specs:
        requests += [replace(r, soft=True)
                     for r in parse_seed_spec(extra_specs[SOFT_SPEC_KEY], key=SOFT_SPEC_KEY)]
    return [replace(r, numa_policy=policy) for r in requests]


def narrow_to_supported(
    requests: Sequence[PciRequest], supported: Collection[str], *, image: str = "the image"
) -> list[PciRequest]:
    """Keep only the alternatives an image supports (`pci_passthrough:supported`)."""
    narrowed: list[PciRequest] = []
    for request in requests:
        if not request.alternatives:
            narrowed.append(request)
            continue
        kept = tuple(name for name in request.alternatives if name in supported)
        if not kept:
            raise InvalidInputError(
                f"{image} supports only PCI flavors {', '.join(sorted(supported))}, "
                f"but the request for {request.describe()} allows none of them; "
                "use a flavor or image that agree")
        narrowed.append(replace(request, alternatives=kept))
    return narrowed
