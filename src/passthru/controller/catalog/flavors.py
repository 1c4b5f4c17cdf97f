"""Flavors and their extra specs in the store: the PCI requests the specs write must
parse and name existing PCI flavors, and a flavor a server uses is not deleted.

Every change bumps the topic `flavors` in its transaction, so that each controller
replica's flavor cache (`catalog.cache`) reads them again.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from passthru.controller.catalog.pci_flavors import flavor_requests, known_pci_flavors
from passthru.controller.catalog.rules import delete_unused, require_free
from passthru.controller.store import lookup, topics
from passthru.controller.store.models import FlavorExtraSpecRow, FlavorRow, ServerRow
from passthru.controller.store.paging import Window, by, rows_page
from passthru.errors import NotFoundError
from passthru.pci.request import check_flavor_names


def page(session: Session, page: Window) -> tuple[list[FlavorRow], bool]:
    """Flavors by name; the marker is a flavor's id."""
    return rows_page(session, select(FlavorRow), (FlavorRow.name,), page, "flavor", "id",
                     by(FlavorRow.id))


def find(session: Session, ref: str) -> FlavorRow:
    return lookup.find(session, FlavorRow, ref, "flavor")


def create(session: Session, name: str, *, vcpus: int, ram_mb: int, disk_gb: int
                  ) -> FlavorRow:
    require_free(session, FlavorRow.name, name, f"a flavor named {name!r} exists already")
    row = FlavorRow(name=name, vcpus=vcpus, ram_mb=ram_mb, disk_gb=disk_gb)
    session.add(row)
    session.flush()
    topics.bump(session, topics.FLAVORS)
    return row


def delete(session: Session, ref: str) -> None:
    delete_unused(session, find(session, ref), ServerRow.flavor_id, "flavor")
    topics.bump(session, topics.FLAVORS)


def set_extra_specs(session: Session, ref: str, specs: Mapping[str, str]) -> FlavorRow:
    """Merge `specs` into the flavor's extra specs."""
    row = find(session, ref)
    # Read with the PCI flavors kept: none the specs name is deleted before this commits.
    check_flavor_names(flavor_requests(row.name, {**row.extra_specs, **specs}),
                       known_pci_flavors(session, keep=True), where=f"flavor {row.name}")
    current = {spec.key: spec for spec in row.extra}
    for key, value in specs.items():
        if key in current:
            current[key].value = value
        else:
            row.extra.append(FlavorExtraSpecRow(key=key, value=value))
    session.flush()
    topics.bump(session, topics.FLAVORS)
    return row


def delete_extra_spec(session: Session, ref: str, key: str) -> None:
    row = find(session, ref)
    spec = next((s for s in row.extra if s.key == key), None)
    if spec is None:
        raise NotFoundError(f"flavor {row.name} has no extra spec {key!r}")
    row.extra.remove(spec)
    topics.bump(session, topics.FLAVORS)
