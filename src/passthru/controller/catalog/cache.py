"""What every boot looks up, kept in memory per replica: the flavors and the PCI flavors'
names.

A boot used to read its flavor (and its extra specs) and every PCI flavor's name from the
store; those change seldom, through the API, and each change bumps its topic
(`controller.store.topics`: `flavors`, `pci_flavors`) in its own transaction. The catalog
reads both versions in the boot's own transaction (one statement) and answers from
memory when they are the versions it loaded at, so that what a boot sees is exactly what
the store held when its transaction began, on every replica. When a version moved it
loads that part again, in that transaction. A name the memory does not know is looked
up in the store before the boot is refused: a row written without a bump (by hand, in a
test) is found all the same.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from passthru.controller.catalog.pci_flavors import known_pci_flavors
from passthru.controller.store import topics
from passthru.controller.store.models import FlavorExtraSpecRow, FlavorRow
from passthru.errors import NotFoundError

_FLAVORS = FlavorRow.__table__
_SPECS = FlavorExtraSpecRow.__table__


@dataclass(frozen=True, slots=True)
class Flavor:
    """A flavor as a boot needs it: its size and its extra specs."""

    id: str
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    extra_specs: Mapping[str, str] = field(default_factory=dict)


_ONE_FLAVOR = (select(_FLAVORS.c.id, _FLAVORS.c.name, _FLAVORS.c.vcpus, _FLAVORS.c.ram_mb,
                      _FLAVORS.c.disk_gb, _SPECS.c.key, _SPECS.c.value)
               .outerjoin(_SPECS, _SPECS.c.flavor_id == _FLAVORS.c.id)
               .where(or_(_FLAVORS.c.id == bindparam("ref"), _FLAVORS.c.name == bindparam("ref")))
               .order_by(_FLAVORS.c.id, _SPECS.c.key))


def read_flavor(session: Session, ref: str, create_hint: str = "") -> Flavor:
    """The flavor whose id or name is `ref`, read from the store in one plain statement
    (its extra specs by key), as `lookup.find` finds rows: by id before by name;
    NotFoundError if there is none."""
    sizes: dict[str, tuple[str, int, int, int]] = {}
    specs: dict[str, dict[str, str]] = {}
    for flavor_id, name, vcpus, ram_mb, disk_gb, key, value in session.connection().execute(
            _ONE_FLAVOR, {"ref": ref}):
        sizes[flavor_id] = (name, vcpus, ram_mb, disk_gb)
        flavor_specs = specs.setdefault(flavor_id, {})
        if key is not None:
            flavor_specs[key] = value
    if not sizes:
        hint = f" ({create_hint})" if create_hint else ""
        raise NotFoundError(f"no flavor {ref!r}{hint}")
    # Ids and names are unique each: at most one flavor by id and another by name.
    flavor_id = ref if ref in sizes else next(iter(sizes))
    return Flavor(flavor_id, *sizes[flavor_id], specs[flavor_id])


def _load_flavors(session: Session) -> dict[str, Flavor]:
    """Every flavor by id, in two plain statements."""
    specs: dict[str, dict[str, str]] = {}
    for flavor_id, key, value in session.execute(
            select(_SPECS.c.flavor_id, _SPECS.c.key, _SPECS.c.value)):
        specs.setdefault(flavor_id, {})[key] = value
    return {row.id: Flavor(row.id, row.name, row.vcpus, row.ram_mb, row.disk_gb,
                           specs.get(row.id, {}))
            for row in session.execute(select(_FLAVORS.c.id, _FLAVORS.c.name, _FLAVORS.c.vcpus,
                                              _FLAVORS.c.ram_mb, _FLAVORS.c.disk_gb))}


class Catalog:
    """This replica's copy of the flavors and PCI flavor names, checked per transaction."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flavors_version = -1
        self._by_id: dict[str, Flavor] = {}
        self._by_name: dict[str, Flavor] = {}
        self._pci_version = -1
        self._pci_names: frozenset[str] = frozenset()

    def lookup(self, session: Session, flavor_ref: str) -> tuple[Flavor, frozenset[str], int]:
        """The flavor whose id or name is `flavor_ref`, the PCI flavors' names, and the
        version of topic `pci_flavors` they are of, as this transaction sees the store."""
        seen = topics.versions(session, topics.FLAVORS, topics.PCI_FLAVORS)
        with self._lock:
            flavors_current = seen[topics.FLAVORS] == self._flavors_version
            pci_current = seen[topics.PCI_FLAVORS] == self._pci_version
            by_id, by_name, names = self._by_id, self._by_name, self._pci_names
        if not flavors_current:
            by_id = _load_flavors(session)
            by_name = {flavor.name: flavor for flavor in by_id.values()}
            with self._lock:
                self._by_id, self._by_name = by_id, by_name
                self._flavors_version = seen[topics.FLAVORS]
        if not pci_current:
            names = frozenset(known_pci_flavors(session))
            with self._lock:
                self._pci_names, self._pci_version = names, seen[topics.PCI_FLAVORS]
        flavor = by_id.get(flavor_ref) or by_name.get(flavor_ref)
        if flavor is None:
            flavor = read_flavor(session, flavor_ref,
                                 create_hint="list them with passthru flavor-list")
        return flavor, names, seen[topics.PCI_FLAVORS]

    @staticmethod
    def pci_flavors_for(session: Session, names: frozenset[str],
                        wanted: set[str]) -> frozenset[str]:
        """The PCI flavors' names to check `wanted` against: `names` (from `lookup`), or
        the store's when some of `wanted` is not among them."""
        if wanted <= names:
            return names
        return frozenset(known_pci_flavors(session))

