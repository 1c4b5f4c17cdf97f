"""The one model of a PCI device, shared by agent, store, scheduler and API."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from enum import StrEnum

from passthru.errors import InvalidInputError


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
#: The longest taint kept; a longer one (a detail of many changed fields) is cut.
MAX_TAINT = 1024
#: Nova's tags whose value is a boolean (without `e.`); stored as "true" or "false".
BOOLEAN_TAGS = frozenset({"trusted", "remote_managed", "managed", "live_migratable",
                          "one_time_use"})
#: Nova's tags that only its placement service reads (without `e.`): they split no pool.
PLACEMENT_TAGS = frozenset({"resource_class", "traits"})
#: Every spelling of a boolean Nova's oslo.utils accepts, either case.
_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "off", "n", "no"})


def boolean_word(text: str) -> str | None:
    """"true" or "false" for any spelling of a boolean; None for other text."""
    word = text.strip().lower()
    return "true" if word in _TRUE else "false" if word in _FALSE else None


#: What makes a function the one that was claimed: another value there means another card
#: now sits at that address (swapped, or a different SKU after a firmware change).
IDENTITY: tuple[str, ...] = ("vendor_id", "product_id", "subsystem_vendor_id",
                             "subsystem_device_id", "dev_class", "iommu_group")


#: The ranges a reported device's numbers keep to: Linux's NUMA node limit (MAX_NUMNODES
#: is at most 1024), an IOMMU group's number (a kernel int), and SR-IOV's 16-bit VF counts.
INT_RANGES: dict[str, tuple[int, int]] = {
    "numa_node": (0, 1023),
    "iommu_group": (0, 2**31 - 1),
    "sriov_totalvfs": (0, 0xFFFF),
    "sriov_numvfs": (0, 0xFFFF),
}
#: The longest text each discovered field may be: what the store's columns hold.
TEXT_LENGTHS: dict[str, int] = {
    "address": 16, "parent_addr": 16, "vendor_id": 6, "product_id": 6,
    "subsystem_vendor_id": 6, "subsystem_device_id": 6, "dev_class": 8,
    "driver": 64, "netdev": 64, "vendor_name": 255, "product_name": 255,
}
#: Extra tags of one device: how many, and how long each value may be.
MAX_TAGS = 64
MAX_TAG_VALUE = 255
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 40


def quote(value: object) -> str:
    """A value as an error message shows it: repr, shortened (hostile values are long)."""
    return _QUOTE.repr(value)


def field_problems(device: PciDevice) -> list[str]:
    """What is out of range or too long in a reported device, one line per field. Checked
    before anything else reads the device, so no later step sees an absurd value."""
    problems = []
    for name, (least, most) in INT_RANGES.items():
        value = getattr(device, name)
        if value is not None and not (isinstance(value, int) and least <= value <= most):
            problems.append(f"{name} {quote(value)} is out of range ({least} to {most}, "
                            "or null)")
    for name, most in TEXT_LENGTHS.items():
        value = getattr(device, name)
        if isinstance(value, str) and len(value) > most:
            problems.append(f"{name} is {len(value)} characters long, at most {most}")
    if len(device.tags) > MAX_TAGS:
        problems.append(f"{len(device.tags)} tags, at most {MAX_TAGS}")
    for key, value in device.tags.items():
        if len(key) > MAX_TAG_VALUE:
            problems.append(f"tag name {quote(key)} is {len(key)} characters long, at most "
                            f"{MAX_TAG_VALUE}")
        elif len(value) > MAX_TAG_VALUE:
            problems.append(f"tag {key} has a value {len(value)} characters long, at most "
                            f"{MAX_TAG_VALUE}")
    return problems


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
            raise InvalidInputError(
                f"{what} {value!r} is not a hex number (expected e.g. '8086')") from None
    if not 0 <= number <= 0xFFFF:
        raise InvalidInputError(f"{what} {value!r} is out of range (at most ffff)")
    return f"{number:04x}"


#: Other spellings operators bring for device attributes and tags, wherever they name one
#: (a whitelist match, a flavor, a pool attribute): the seed's and Nova's `device_id`,
#: Nova's `devname` and `device_type`, and Nova's bare `physical_network` tag.
SYNONYMS: dict[str, str] = {"device_id": "product_id", "devname": "netdev",
                            "device_type": "dev_type", "physical_network": PHYSICAL_NETWORK}


def canonical_attr(key: str) -> str:
    """An attribute or tag name in passthru's spelling (`SYNONYMS`)."""
    return SYNONYMS.get(key, key)


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
    #: Why it is not given to a new VM (DRA's NoSchedule), until an operator clears it:
    #: their own reason, another card reported at its address while in use, or a
    #: one-time-use device used once. A VM that holds it keeps it; its free is as ever.
    taint: str | None = None

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
        """Whether a new VM may be given it: available and not tainted."""
        return self.status is DeviceStatus.AVAILABLE and self.taint is None
