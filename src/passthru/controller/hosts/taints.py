"""Operator taints: an admin takes one device out of scheduling (DRA's NoSchedule) and puts
it back. The device's row changes through the ledger, its one writer."""

from __future__ import annotations

from sqlalchemy.orm import Session

from passthru.controller import ledger
from passthru.errors import NotFoundError
from passthru.pci.address import PciAddress
from passthru.pci.device import PciDevice


def set_taint(session: Session, host: str, address: str, taint: str | None
              ) -> tuple[PciDevice, int | None, int]:
    """Taint (a reason) or clear (None) device `address` of `host`; the device, its pool
    and its row's generation as they are now."""
    canonical = str(PciAddress.parse(address))
    locked = ledger.lock_host(session, host)
    if locked is None:
        raise NotFoundError(f"no host {host!r} (list them with passthru host-list)")
    return ledger.set_taint(session, locked, canonical, taint)
