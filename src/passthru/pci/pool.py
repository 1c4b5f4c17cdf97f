"""Pools: a host's whitelisted devices grouped by `pool_attrs` (the seed's pci_flavor_attrs).

Every device is in exactly one pool. Besides the operator's attributes a pool is keyed by
what the scheduler needs to apply NUMA and PF/VF rules: device type, NUMA node, and the
parent PF of VFs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from passthru.errors import InvalidInputError
from passthru.pci.device import (
    BASE_ATTRS,
    PLACEMENT_TAGS,
    DevType,
    PciDevice,
    canonical_attr,
    quote,
)
from passthru.pci.match import did_you_mean, tag_key

#: The seed's default: vendor_id, product_id and every extra tag (`e.*`).
DEFAULT_POOL_ATTRS: tuple[str, ...] = ("vendor_id", "product_id", "e.*")


def pool_attr(name: str) -> str:
    """A pool attribute: a base attribute (the seed's `device_id` is product_id), an extra
    tag, or `e.*` for all of them (but Nova's placement-only `resource_class` and
    `traits`, which split no pool). Anything else (`address`, a typo) groups nothing and is
    refused, in the host config and in reports alike."""
    if name == "e.*":
        return name
    base = canonical_attr(name)
    if base in BASE_ATTRS:
        return base
    if base.startswith("e."):
        return tag_key(base, what="pool attribute")
    raise InvalidInputError(
        f"pool attribute {quote(name)} is not exposed by devices; use one of "
        f"{', '.join(BASE_ATTRS)}, an extra tag such as 'e.group', or 'e.*' "
        f"({did_you_mean(name[:100], BASE_ATTRS)})"
    )


class Attributed(Protocol):
    """What a PCI flavor matches: a pool, or only its signature."""

    def attr(self, key: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Signature:
    """What PCI flavors and requests see of a pool: its attributes and device type. Its NUMA
    node and parent PF do not change which requests it serves, so pools of one signature
    on every host serve the same requests."""

    attrs: tuple[tuple[str, str], ...]
    dev_type: DevType
    #: Computed once: the scheduler looks every pool's signature up in its maps.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.attrs, self.dev_type)))

    def __hash__(self) -> int:
        return self._hash

    def attr(self, key: str) -> str | None:
        """What a PCI flavor sees, as `Pool.attr`."""
        if key == "dev_type":
            return str(self.dev_type)
        key = canonical_attr(key)
        return next((value for name, value in self.attrs if name == key), None)


@dataclass(frozen=True, slots=True)
class PoolKey:
    """A pool's identity on its host."""

    signature: Signature
    numa_node: int | None
    parent_addr: str | None


@dataclass(slots=True)
class Pool:
    """Devices of one host that look the same to PCI flavors and to the scheduler."""

    attrs: dict[str, str]
    dev_type: DevType
    numa_node: int | None
    parent_addr: str | None
    devices: list[PciDevice] = field(default_factory=list)

    @property
    def signature(self) -> Signature:
        return Signature(tuple(sorted(self.attrs.items())), self.dev_type)

    @property
    def key(self) -> PoolKey:
        return PoolKey(self.signature, self.numa_node, self.parent_addr)

    @property
    def count(self) -> int:
        return len(self.devices)

    @property
    def free(self) -> int:
        return sum(1 for d in self.devices if d.is_free)

    def attr(self, key: str) -> str | None:
        """What a PCI flavor sees: the pool's attributes and its device type."""
        if key == "dev_type":
            return str(self.dev_type)
        return self.attrs.get(canonical_attr(key))


def pool_values(device: PciDevice, pool_attrs: Sequence[str]) -> dict[str, str]:
    """The values of `pool_attrs` for one device; `e.*` stands for all its extra tags."""
    return _values(device, [canonical_attr(name) for name in pool_attrs])


def _values(device: PciDevice, names: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in names:
        if name == "e.*":
            values.update((key, value) for key, value in device.tags.items()
                          if key.removeprefix("e.") not in PLACEMENT_TAGS)
            continue
        value = device.attr(name)
        if value is not None:
            values[name] = value
    return values


def build_pools(
    devices: Iterable[PciDevice], pool_attrs: Sequence[str] = DEFAULT_POOL_ATTRS
) -> list[Pool]:
    """Partition devices into pools, in the order their first device appears."""
    names = [canonical_attr(name) for name in pool_attrs]
    pools: dict[PoolKey, Pool] = {}
    for device in devices:
        key = _key(device, names)
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = empty_pool(key)
        pool.devices.append(device)
    return list(pools.values())


def pool_key(device: PciDevice, pool_attrs: Sequence[str] = DEFAULT_POOL_ATTRS) -> PoolKey:
    """The key of the pool `device` belongs in, as `build_pools` groups it: what a change
    to one device needs to know whether it moves pools, without grouping its host."""
    return _key(device, [canonical_attr(name) for name in pool_attrs])


def empty_pool(key: PoolKey) -> Pool:
    """A pool with this key and no devices yet."""
    return Pool(dict(key.signature.attrs), key.signature.dev_type, key.numa_node,
                key.parent_addr)


def _key(device: PciDevice, names: Sequence[str]) -> PoolKey:
    values = _values(device, names)
    parent = device.parent_addr if device.dev_type is DevType.VF else None
    return PoolKey(Signature(tuple(sorted(values.items())), device.dev_type), device.numa_node,
                   parent)


def pool_summary(pool: Pool) -> Mapping[str, object]:
    """A pool as the seed's PCI stats show it: its attributes and counts."""
    return {
        **pool.attrs,
        "dev_type": str(pool.dev_type),
        "numa_node": pool.numa_node,
        "parent_addr": pool.parent_addr,
        "count": pool.count,
        "free": pool.free,
    }
