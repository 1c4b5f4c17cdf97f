"""PCI flavors in the store: which exist, what flavors and images ask of them, who uses
one, the attributes hosts expose to them, and their writes.

A PCI flavor is locked while it is changed or deleted: a write that names it (a flavor's
extra specs, an image, a port) holds it meanwhile (`known_pci_flavors(keep=True)`), and is
among its users once committed. Every change bumps the topic `pci_flavors` in its
transaction, so that every controller replica's scheduler reads the flavors again before
its next placement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from passthru.controller.catalog.rules import require_free
from passthru.controller.store import lookup, topics
from passthru.controller.store.models import (
    FlavorRow,
    HostRow,
    ImageRow,
    PciFlavorRow,
    PciFlavorSpecRow,
    PoolRow,
    PortRow,
)
from passthru.controller.store.paging import Window, by, rows_page
from passthru.errors import ConflictError, ForbiddenError, InvalidInputError
from passthru.pci.flavor import FLAVOR_ATTRS_NAME, FLAVOR_ATTRS_UUID, PciFlavor, flavor_key
from passthru.pci.request import PciRequest, requests_from_extra_specs

#: The image property naming the PCI flavors an image works with.
SUPPORTED_KEY = "pci_passthrough:supported"

#: How a change takes its pairs: `update` makes them the whole definition, as the seed
#: says; `set` merges them into it, a null value removing a key.
Action = Literal["update", "set"]


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


def page(session: Session, window: Window) -> tuple[list[PciFlavorRow], bool]:
    """PCI flavors by name; the marker is a PCI flavor's UUID."""
    return rows_page(session, select(PciFlavorRow), (PciFlavorRow.name,), window,
                     "PCI flavor", "UUID", by(PciFlavorRow.uuid))


def is_attrs(ref: str) -> bool:
    """Whether `ref` names the seed's flavor of exposed attributes (UUID 0)."""
    return ref in (FLAVOR_ATTRS_UUID, FLAVOR_ATTRS_NAME)


def find(session: Session, ref: str, *, lock: bool = True) -> PciFlavorRow:
    """The PCI flavor `ref`, `lock`ed for a change or delete."""
    if is_attrs(ref):
        raise ForbiddenError(f"{FLAVOR_ATTRS_NAME} (UUID 0) lists what hosts expose and "
                             "cannot be changed here; change the hosts' pool_attrs")
    row = lookup.find(session, PciFlavorRow, ref, "PCI flavor",
                      create_hint="create it with passthru pci-flavor-create")
    if lock:
        session.refresh(row, with_for_update=True)
    return row


def _store_spec(row: PciFlavorRow, spec: Mapping[str, str]) -> None:
    current = {s.key: s for s in row.specs}
    for key in set(current) - set(spec):
        row.specs.remove(current[key])
    for key, value in spec.items():
        if key in current:
            current[key].value = value
        else:
            row.specs.append(PciFlavorSpecRow(key=key, value=value))


def _name_free(session: Session, name: str) -> None:
    require_free(session, PciFlavorRow.name, name,
                 f"a PCI flavor named {name!r} exists already; change it with "
                 f"passthru pci-flavor-update {name} set KEY=VALUE")


def create(session: Session, flavor: PciFlavor) -> PciFlavorRow:
    _name_free(session, flavor.name)
    row = PciFlavorRow(name=flavor.name, description=flavor.description)
    _store_spec(row, flavor.spec)
    session.add(row)
    session.flush()
    topics.bump(session, topics.PCI_FLAVORS)
    return row


def _changed(session: Session, row: PciFlavorRow, action: Action,
             pairs: Mapping[str, str | None], name: str | None,
             description: str | None) -> PciFlavor:
    keyed = {flavor_key(k, flavor=row.name): v for k, v in pairs.items()}
    removed = [k for k, v in keyed.items() if v is None]
    if action == "update" and removed:
        raise InvalidInputError(f"action update takes values, not null ({removed[0]}); use "
                                "action set to remove single keys")
    spec = {} if action == "update" else dict(row.spec)
    spec.update({k: v for k, v in keyed.items() if v is not None})
    for key in removed:
        spec.pop(key, None)
    new_name = name if name is not None else row.name
    if new_name != row.name:
        _name_free(session, new_name)
        users = users_of(session, row.name)
        if users:
            raise ConflictError(f"PCI flavor {row.name} cannot be renamed while "
                                f"{', '.join(users)} use(s) it")
    return PciFlavor(new_name, spec, description if description is not None
                     else row.description, row.uuid)


def change(session: Session, ref: str, action: Action, pairs: Mapping[str, str | None], *,
           name: str | None = None, description: str | None = None) -> PciFlavorRow:
    """Change PCI flavor `ref`: its match `pairs` as `action` says, and its `name` and
    `description` where given. A flavor something uses keeps its name."""
    row = find(session, ref)
    new = _changed(session, row, action, pairs, name, description)
    row.name, row.description = new.name, new.description
    _store_spec(row, new.spec)
    session.flush()
    topics.bump(session, topics.PCI_FLAVORS)
    return row


def delete(session: Session, ref: str) -> None:
    row = find(session, ref)
    users = users_of(session, row.name)
    if users:
        raise ConflictError(f"PCI flavor {row.name} is still used by {', '.join(users)}; "
                            "change or delete them first")
    session.delete(row)
    topics.bump(session, topics.PCI_FLAVORS)
