"""The one model of a PCI device, shared by agent, store, scheduler and API."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from passthru.pci.errors import PciValueError


class DevType(StrEnum):
    """Nova's device types: a plain function, an SR-IOV physical or virtual function."""

    PCI = "type-PCI"
    PF = "type-PF"
    VF = "type-VF"


class DeviceStatus(StrEnum):
    """Lifecycle: available → claimed → allocated → available; `removed` once gone.

    `unavailable` is a device blocked by a relative: a PF whose VFs are in use, or a VF
    whose PF is in use.
    """

    AVAILABLE = "available"
    CLAIMED = "claimed"
    ALLOCATED = "allocated"
    UNAVAILABLE = "unavailable"
    REMOVED = "removed"


#: Extra tags live in the `e.` namespace; this one is reserved for networking.
PHYSICAL_NETWORK = "e.physical_network"

#: Attributes that every device exposes to pools and PCI flavors (besides its tags).
BASE_ATTRS: tuple[str, ...] = ("vendor_id", "product_id", "dev_type", "dev_class")


def normalize_id(value: str | int, what: str = "id") -> str:
    """A PCI vendor or product id as four lower-case hex digits ('0x8086', 'a' → '000a')."""
    if isinstance(value, int):
        number = value
    else:
        text = value.strip().lower()
        text = text.removeprefix("0x")
        try:
            number = int(text, 16)
        except ValueError:
            raise PciValueError(
                f"{what} {value!r} is not a hex number (expected e.g. '8086')") from None
    if not 0 <= number <= 0xFFFF:
        raise PciValueError(f"{what} {value!r} is out of range (at most ffff)")
    return f"{number:04x}"


# Other spellings operators bring: Nova's bare tag, and the seed's name for product_id.
_ATTR_ALIASES = {"physical_network": PHYSICAL_NETWORK, "device_id": "product_id"}


def normalize_tag(key: str) -> str:
    """An attribute or tag name in our spelling: Nova's bare `physical_network` is
    `e.physical_network`, the seed's `device_id` is `product_id`."""
    return _ATTR_ALIASES.get(key, key)


@dataclass(slots=True)
class PciDevice:
    """A PCI function on a host, as discovered and as tracked.

    `address` is canonical `DDDD:BB:SS.F` (lower-case hex). `tags` holds the operator's
    extra tags from `pci_information` (keys start with `e.`).
    """

    address: str
    vendor_id: str
    product_id: str
    dev_type: DevType = DevType.PCI
    dev_class: str = ""
    subsystem_vendor_id: str | None = None
    subsystem_device_id: str | None = None
    parent_addr: str | None = None
    numa_node: int | None = None
    iommu_group: int | None = None
    driver: str | None = None
    netdev: str | None = None
    vendor_name: str | None = None
    product_name: str | None = None
    sriov_totalvfs: int | None = None
    sriov_numvfs: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    status: DeviceStatus = DeviceStatus.AVAILABLE
    owner: str | None = None
    request_id: str | None = None
    # The host stopped reporting it while it was in use: it goes to `removed` when freed.
    missing: bool = False

    def attr(self, key: str) -> str | None:
        """The value of an exposed attribute: a base attribute or an `e.` tag."""
        if key.startswith("e."):
            return self.tags.get(key)
        if key in BASE_ATTRS:
            value = getattr(self, key)
            return str(value) if value is not None else None
        return None

    @property
    def physical_network(self) -> str | None:
        return self.tags.get(PHYSICAL_NETWORK)

    @property
    def is_free(self) -> bool:
        return self.status is DeviceStatus.AVAILABLE
