"""`--nic` values: `net-id=N,vnic-type=direct,pci-flavor=F` or `port-id=P`."""

from __future__ import annotations

from typing import Any

from passthru.errors import InvalidInputError
from passthru.pci.binding import VnicType
from passthru.pci.request import parse_seed_spec

_KEYS = {"net-id": "uuid", "port-id": "port", "vnic-type": "vnic_type",
         "pci-flavor": "pci_flavor"}


def _pci_flavor(text: str, where: str) -> str:
    """A nic takes one device: `pci-flavor=phyX_NIC`, or the seed's `1:phyX_NIC;`."""
    requests = parse_seed_spec(text, key=f"{where} pci-flavor")
    if len(requests) != 1 or requests[0].count != 1 or len(requests[0].alternatives) != 1:
        raise InvalidInputError(f"{where}: pci-flavor={text!r} must name one PCI flavor; a nic "
                                "gets exactly one device")
    return requests[0].alternatives[0]


def parse_nic(text: str) -> dict[str, Any]:
    """One `--nic` as the API's `networks` entry."""
    where = f"--nic {text}"
    nic: dict[str, Any] = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        key = key.strip().replace("_", "-")
        if not equals or not value.strip():
            raise InvalidInputError(f"{where}: {item!r} is not KEY=VALUE")
        if key not in _KEYS:
            raise InvalidInputError(f"{where}: unknown key {key!r}; use "
                                    f"{', '.join(_KEYS)}")
        value = value.strip()
        if key == "vnic-type":
            choices = [v.value for v in VnicType]
            if value not in choices:
                raise InvalidInputError(f"{where}: vnic-type {value!r} is not one of "
                                        f"{', '.join(choices)}")
        if key == "pci-flavor":
            value = _pci_flavor(value, where)
        nic[_KEYS[key]] = value
    if ("uuid" in nic) == ("port" in nic):
        raise InvalidInputError(f"{where}: give net-id=NETWORK or port-id=PORT")
    return nic
