"""PCI flavors: the seed's named match expressions that select devices for users.

A flavor is a name (`bigGPU`, `phyX_NIC`) and key/value pairs over what hosts expose to
the whole cloud: `vendor_id`, `product_id`, `dev_type`, `dev_class` and extra tags
(`e.group`, `e.physical_network`; Nova's bare `physical_network` is accepted). Values are
literal, glob or regex (see passthru.pci.match); a boolean tag's (`e.trusted`) is matched
in any spelling Nova takes (`yes`, `True`, `1`). Addresses, hosts and NUMA nodes are
refused: a flavor means the same on every host. Flavors may overlap. A flavor with no
pairs matches every device.

Nova's `[pci] alias` lines translate to flavors with `parse_nova_alias`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from passthru.errors import InvalidInputError
from passthru.pci.device import (
    BASE_ATTRS,
    BOOLEAN_TAGS,
    SYNONYMS,
    PciDevice,
    boolean_word,
    canonical_attr,
)
from passthru.pci.match import ValueMatcher, compile_attribute, did_you_mean, tag_key
from passthru.pci.pool import Attributed
from passthru.pci.request import FLAVOR_NAME, NumaPolicy, parse_numa_policy

#: The seed keeps the attributes hosts expose as a pseudo-flavor with this UUID and name.
FLAVOR_ATTRS_UUID = "0"
FLAVOR_ATTRS_NAME = "_flavor_attrs"

MAX_NAME = 255

_PER_HOST = ("flavors are global to the cloud, but {key} differs from host to host; tag "
             "the devices in the hosts' pci_information (e.g. extra = {{\"e.group\" = "
             "\"fast\"}}) and name the tag in the flavor instead")
_REFUSED: dict[str, str] = {
    "address": _PER_HOST,
    "parent_addr": _PER_HOST,
    "host": _PER_HOST,
    "netdev": _PER_HOST,
    "driver": _PER_HOST,
    "iommu_group": _PER_HOST,
    "numa_node": ("flavors are global to the cloud, but NUMA nodes are per host; ask for "
                  "NUMA affinity with the flavor extra spec hw:pci_numa_affinity_policy"),
    "name": "{key} is the flavor's own field, not a device attribute",
    "description": "{key} is the flavor's own field, not a device attribute",
    "uuid": "{key} is the flavor's own field, not a device attribute",
}


def validate_flavor_name(name: str) -> str:
    """The name if it is a valid PCI flavor name; otherwise a InvalidInputError saying why.

    The rule is the one requests read names by (`request.FLAVOR_NAME`); it also keeps
    names off the reserved `_flavor_attrs` and UUID `0`.
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"PCI flavor name {name!r} must be text, such as 'bigGPU'")
    if not name:
        raise InvalidInputError("PCI flavor name is empty; give a name such as 'bigGPU'")
    if len(name) > MAX_NAME:
        raise InvalidInputError(
            f"PCI flavor name {name[:20]!r}... is {len(name)} characters; at most {MAX_NAME}")
    if name.startswith("_"):
        raise InvalidInputError(
            f"PCI flavor name {name!r} is reserved: names starting with '_' are passthru's "
            f"own (such as {FLAVOR_ATTRS_NAME})")
    if not FLAVOR_NAME.fullmatch(name):
        raise InvalidInputError(
            f"PCI flavor name {name!r} is not valid: start with a letter, then letters, "
            "digits, '_', '.' or '-' (e.g. 'bigGPU', 'phyX_NIC', 'QA13')")
    return name


def flavor_key(key: str, *, flavor: str = "") -> str:
    """A flavor key in its canonical spelling, or a InvalidInputError saying why it is refused."""
    label = f"PCI flavor {flavor}: " if flavor else ""
    if not isinstance(key, str):
        raise InvalidInputError(f"{label}key {key!r} must be a string")
    written, key = key, canonical_attr(key)
    if key in BASE_ATTRS:
        return key
    if key in _REFUSED:
        raise InvalidInputError(f"{label}key {written!r} is refused: "
                                + _REFUSED[key].format(key=written))
    if key.startswith("e."):
        return tag_key(key, what=f"{label}key")
    raise InvalidInputError(
        f"{label}key {key!r} is not an attribute hosts expose; use "
        f"{', '.join(BASE_ATTRS)} or an extra tag 'e.<name>' ("
        + did_you_mean(key, (*BASE_ATTRS, *SYNONYMS)) + ")")


@dataclass(frozen=True, slots=True)
class PciFlavor:
    """A named match expression. `spec` keys come out canonical; values stay as written."""

    name: str
    spec: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    uuid: str | None = None
    _matchers: tuple[tuple[str, ValueMatcher], ...] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_flavor_name(self.name)
        if not isinstance(self.spec, Mapping):
            raise InvalidInputError(f"PCI flavor {self.name}: the spec must be key/value pairs")
        spec: dict[str, str] = {}
        for written, value in self.spec.items():
            key = flavor_key(written, flavor=self.name)
            if key in spec:
                raise InvalidInputError(
                    f"PCI flavor {self.name}: {key!r} is given twice (once as {written!r})")
            if not isinstance(value, str):
                raise InvalidInputError(
                    f"PCI flavor {self.name}: {written} = {value!r} must be a string")
            # A boolean tag is stored as "true" or "false": any other spelling of one
            # matches it too (Nova's `yes`, `True`, `1`).
            if key.removeprefix("e.") in BOOLEAN_TAGS:
                value = boolean_word(value) or value
            spec[key] = value
        matchers = tuple(
            (key, compile_attribute(key, value, what=f"PCI flavor {self.name}: {key}"))
            for key, value in spec.items())
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "_matchers", matchers)

    def matches_pool(self, pool: Attributed) -> bool:
        """Whether the pool's devices are this flavor's; a pool lacking an attribute the
        flavor names (not in the host's pool_attrs) does not match."""
        return all(matcher.matches(pool.attr(key)) for key, matcher in self._matchers)

    def matches_device(self, device: PciDevice) -> bool:
        return all(matcher.matches(device.attr(key)) for key, matcher in self._matchers)


@dataclass(frozen=True, slots=True)
class NovaAlias:
    """A nova.conf `[pci] alias` line as a PCI flavor and the NUMA policy it asks for.

    `ignored` names keys that only mean something to Nova's placement service
    (`resource_class`, `traits`, `live_migratable`); the importer should tell the operator.
    """

    flavor: PciFlavor
    numa_policy: NumaPolicy
    ignored: tuple[str, ...] = ()


_ALIAS_MATCH_KEYS = ("vendor_id", "product_id", "device_type")
_ALIAS_IGNORED = ("resource_class", "traits", "live_migratable")
_ALIAS_KEYS = ("name", "numa_policy", "capability_type", *_ALIAS_MATCH_KEYS, *_ALIAS_IGNORED)


def parse_nova_alias(line: str) -> NovaAlias:
    """One nova.conf `[pci] alias = {"name": ..., "vendor_id": ..., "product_id": ...,
    "device_type": ..., "numa_policy": ...}` line."""
    try:
        alias: Any = json.loads(line)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"[pci] alias is not valid JSON ({error.msg} at column "
                                f"{error.colno}):\n  {line}") from None
    if not isinstance(alias, dict):
        raise InvalidInputError(f"[pci] alias must be a JSON object:\n  {line}")
    try:
        return _alias(alias)
    except InvalidInputError as error:
        raise InvalidInputError(f"[pci] alias: {error}\n  {line}") from None


def _alias(alias: dict[str, Any]) -> NovaAlias:
    unknown = [key for key in alias if key not in _ALIAS_KEYS]
    if unknown:
        raise InvalidInputError(f"unknown key {unknown[0]!r}; "
                                + did_you_mean(unknown[0], _ALIAS_KEYS))
    if "name" not in alias:
        raise InvalidInputError("the alias has no name; add \"name\": \"...\"")
    if alias.get("capability_type", "pci") != "pci":
        raise InvalidInputError(f"capability_type {alias['capability_type']!r} is not supported; "
                                "only 'pci'")
    name = alias["name"].strip() if isinstance(alias["name"], str) else alias["name"]
    spec = {key: alias[key] for key in _ALIAS_MATCH_KEYS if key in alias}
    flavor = PciFlavor(name, spec, description="imported from nova.conf [pci] alias")
    policy = alias.get("numa_policy")
    if policy is not None and not isinstance(policy, str):
        raise InvalidInputError(f"numa_policy {policy!r} must be a string")
    return NovaAlias(flavor, parse_numa_policy(policy),
                     tuple(key for key in _ALIAS_IGNORED if key in alias))
