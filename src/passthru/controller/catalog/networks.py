"""Provider networks in the store: which a project may use, one network per segment (a
VLAN id, or the flat network, of a physical network), and no delete while ports remain."""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select, text
from sqlalchemy.orm import Session

from passthru.controller.catalog.rules import require_free
from passthru.controller.store.lookup import find
from passthru.controller.store.models import NetworkRow
from passthru.controller.store.paging import Window, by, rows_page
from passthru.errors import ConflictError
from passthru.pci.binding import NetworkSpec, NetworkType

#: The PostgreSQL advisory lock network creates take turns on.
_CREATE_LOCK = 0x6E657473  # "nets"


def _usable_by(project: str | None) -> list[ColumnElement[bool]]:
    """A project's own networks and the shared ones; `project` None (an admin): all."""
    return [] if project is None else [
        or_(NetworkRow.project.is_(None), NetworkRow.project == project)]


def page(session: Session, project: str | None, window: Window
         ) -> tuple[list[NetworkRow], bool]:
    """The networks `project` may use, by name; the marker is a network's id."""
    scope = _usable_by(project)
    return rows_page(session, select(NetworkRow).where(*scope), (NetworkRow.name,), window,
                     "network", "id", by(NetworkRow.id, scope=scope))


def visible_network(session: Session, ref: str, project: str | None) -> NetworkRow:
    """A network by UUID or name that `project` may use (its own or a shared one);
    `project` None (an admin) sees every network."""
    return find(session, NetworkRow, ref, "network", *_usable_by(project),
                create_hint="list them with passthru net-list")


def _one_create_at_a_time(session: Session) -> None:
    """A create checks that no network has its segment yet, then adds one: two creates of
    one segment must not both pass the check. SQLite writers take turns anyway; on
    PostgreSQL they take turns on an advisory lock held until the transaction ends (no
    row exists yet to lock, and no unique index can say "one flat network per physical
    network", whose segmentation id is null)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})


def create(session: Session, spec: NetworkSpec, project: str | None) -> NetworkRow:
    """Network `spec`, owned by `project` (None: shared by every project)."""
    _one_create_at_a_time(session)
    require_free(session, NetworkRow.name, spec.name,
                 f"a network named {spec.name!r} exists already")
    clash = session.scalars(select(NetworkRow).where(
        NetworkRow.physical_network == spec.physical_network,
        NetworkRow.network_type == spec.network_type,
        NetworkRow.segmentation_id.is_(None) if spec.segmentation_id is None
        else NetworkRow.segmentation_id == spec.segmentation_id)).first()
    if clash is not None:
        what = ("the flat network" if spec.network_type is NetworkType.FLAT
                else f"VLAN {spec.segmentation_id}")
        raise ConflictError(f"{what} of physical network {spec.physical_network} is "
                            f"network {clash.name} already")
    row = NetworkRow(name=spec.name, project=project, network_type=spec.network_type,
                     physical_network=spec.physical_network,
                     segmentation_id=spec.segmentation_id)
    session.add(row)
    session.flush()
    return row


def delete(session: Session, ref: str) -> None:
    row = visible_network(session, ref, None)
    # Locked first: a port made on it meanwhile holds the row (its foreign key), and is
    # listed here once committed.
    session.refresh(row, with_for_update=True)
    if row.ports:
        names = ", ".join(sorted(p.name or p.id for p in row.ports)[:5])
        raise ConflictError(f"network {row.name} still has {len(row.ports)} port(s) "
                            f"({names}); delete them (or their servers) first")
    session.delete(row)
