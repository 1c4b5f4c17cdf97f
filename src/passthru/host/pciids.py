"""Vendor and device names from the pci.ids database (Debian package `pci.ids`).

The file is parsed once, on the first lookup, and only its vendor and device lines: the
subsystem and class sections are not needed for names. A host without the database still
discovers its devices, just without names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

#: Where distributions install the database, most common first.
PCI_IDS_PATHS: tuple[Path, ...] = (
    Path("/usr/share/misc/pci.ids"),
    Path("/usr/share/hwdata/pci.ids"),
    Path("/usr/share/pci.ids"),
)


@dataclass(slots=True)
class PciIds:
    """Names by lower-case 4-hex ids; lookups of unknown ids give None."""

    vendors: dict[str, str] = field(default_factory=dict)
    products: dict[tuple[str, str], str] = field(default_factory=dict)

    def vendor_name(self, vendor_id: str) -> str | None:
        return self.vendors.get(vendor_id)

    def product_name(self, vendor_id: str, product_id: str) -> str | None:
        return self.products.get((vendor_id, product_id))


def parse_pci_ids(lines: Iterable[str]) -> PciIds:
    """Parse pci.ids text: `VVVV  name` vendor lines, `<tab>DDDD  name` device lines."""
    ids = PciIds()
    vendor: str | None = None
    for line in lines:
        if line.startswith("C "):
            break  # the class section ends the device list
        if not line or line[0] == "#" or line.startswith("\t\t"):
            continue
        if line[0] == "\t":
            if vendor is not None and line[5:7] == "  ":
                ids.products[(vendor, line[1:5].lower())] = line[7:].rstrip()
        elif line[4:6] == "  ":
            vendor = line[:4].lower()
            ids.vendors[vendor] = line[6:].rstrip()
    return ids


def load_pci_ids(path: Path) -> PciIds:
    with path.open(encoding="utf-8", errors="replace") as lines:
        return parse_pci_ids(lines)


def first_pci_ids(paths: Iterable[Path]) -> PciIds:
    """The first database found among `paths`; empty (no names) when there is none."""
    for path in paths:
        if path.is_file():
            return load_pci_ids(path)
    return PciIds()


@cache
def default_pci_ids() -> PciIds:
    """The system database, read on first use."""
    return first_pci_ids(PCI_IDS_PATHS)
