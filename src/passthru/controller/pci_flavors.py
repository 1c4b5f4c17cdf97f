"""PCI flavors in the store: which exist, what flavors and images ask of them, who uses
one, and the attributes hosts expose to them."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from passthru.controller.models import FlavorRow, HostRow, ImageRow, PciFlavorRow, PoolRow, PortRow
from passthru.errors import InvalidInputError
from passthru.pci.flavor import flavor_key
from passthru.pci.request import PciRequest, requests_from_extra_specs

#: The image property naming the PCI flavors an image works with.
SUPPORTED_KEY = "pci_passthrough:supported"


def known_pci_flavors(session: Session, *, keep: bool = False) -> set[str]:
    """The PCI flavors' names; with `keep`, none of them can be deleted or renamed until
    this transaction ends (PostgreSQL: FOR SHARE, as a PCI flavor's delete and update lock
    it FOR UPDATE), for a write that will name some of them."""
    query = select(PciFlavorRow.name)
    return set(session.scalars(query.with_for_update(read=True) if keep else query))


def supported_flavors(properties: Mapping[str, str]) -> list[str] | None:
    """The PCI flavors an image's properties say it works with (None: they do not say)."""
    text = properties.get(SUPPORTED_KEY)
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def flavor_requests(flavor: str, extra_specs: Mapping[str, str]) -> list[PciRequest]:
    """The PCI requests a flavor's extra specs make; errors name the flavor."""
    try:
        return requests_from_extra_specs(extra_specs)
    except InvalidInputError as error:
        raise InvalidInputError(f"flavor {flavor}: {error}") from None


def users_of(session: Session, name: str) -> list[str]:
    """Everything that names PCI flavor `name`: flavors' extra specs, images, ports."""
    users: list[str] = []
    for flavor in session.scalars(select(FlavorRow).order_by(FlavorRow.name)):
        try:
            requests = requests_from_extra_specs(flavor.extra_specs)
        except InvalidInputError:
            continue  # a spec that does not parse names no flavor
        if any(name in r.alternatives for r in requests):
            users.append(f"flavor {flavor.name}")
    users += [f"image {image.name}" for image in session.scalars(
        select(ImageRow).order_by(ImageRow.name))
        if name in (supported_flavors(image.properties) or [])]
    users += [f"port {port.name or port.id}" for port in session.scalars(
        select(PortRow).where(PortRow.pci_flavor == name).order_by(PortRow.created_at))]
    return users


def exposed_attrs(session: Session) -> list[str]:
    """The seed's `_flavor_attrs`: every attribute some host groups its pools by, plus
    dev_type which every pool has."""
    attrs: set[str] = {"dev_type"}
    for pool_attrs in session.scalars(select(HostRow.pool_attrs)):
        for attr in pool_attrs:
            if attr == "e.*":
                continue  # stands for the tags, which the pools below list one by one
            try:
                attrs.add(flavor_key(attr))
            except InvalidInputError:
                continue  # an attribute a flavor may not use (e.g. address) is not exposed
    for pool_values in session.scalars(select(PoolRow.attrs)):
        attrs.update(pool_values)
    return sorted(attrs)
