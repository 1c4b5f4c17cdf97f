"""After an agent restart: set the host's libvirt domains against the controller's servers.

Domains keep running while the agent is away, so the agent finds out from libvirt which
servers still hold devices here. A domain of a server the controller still has is kept
(its devices stay allocated); a domain of a server the controller deleted meanwhile is
destroyed and its VFs reset; a server the controller believes ACTIVE here without a domain
is reported, so that the controller can set it to ERROR and free its devices.

While the agent runs, `remove_strays` does the first part each round: a domain can outlive
what the controller knows when a spawn's answer never reached it (the controller was
down) and the controller moved on meanwhile (the build timed out, or the host was marked
down and the server placed elsewhere); nothing would ever ask for that domain again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from passthru.errors import InvalidInputError
from passthru.host.attach import DOMAIN_PREFIX, Attacher
from passthru.host.libvirt_driver import DomainNotFoundError, DomainState, LibvirtDriver
from passthru.pci.work import (
    DestroyOrder,
    KnownServer,
    OrderResult,
    OwnedDomain,
    ReconcileReport,
    canonical_uuid,
)


def _server_uuid(domain: str) -> str | None:
    """The server a domain was made for; None when passthru did not make it."""
    if not domain.startswith(DOMAIN_PREFIX):
        return None
    text = domain.removeprefix(DOMAIN_PREFIX)
    try:
        # Only the spelling passthru writes: `passthru-{uuid}` in other forms is not ours.
        return text if canonical_uuid(text) == text else None
    except InvalidInputError:
        return None


def _owned(state: DomainState, server_uuid: str) -> OwnedDomain:
    return OwnedDomain(server_uuid, state.name, state.active,
                       list(state.devices.pci_addresses), list(state.devices.macvtap_netdevs))


def owned_domains(driver: LibvirtDriver) -> list[OwnedDomain]:
    """The domains passthru made on this host, with the devices they hold, by name."""
    return [_owned(state, server_uuid) for state in driver.domains()
            if (server_uuid := _server_uuid(state.name)) is not None]


def reconcile(attacher: Attacher, known_servers: Iterable[KnownServer]) -> ReconcileReport:
    """Keep the domains of `known_servers`, destroy the others passthru made, and report
    the ACTIVE servers that have no domain here."""
    known = {server.server_uuid: server for server in known_servers}
    report = ReconcileReport()
    for domain in owned_domains(attacher.driver):
        if domain.server_uuid in known:
            report.kept.append(domain)
            continue
        report.orphans.append(domain)
        result = attacher.destroy(DestroyOrder(domain.server_uuid, domain.domain))
        if not result.ok:
            report.orphan_faults[domain.server_uuid] = result.fault or "destroy failed"
    present = {domain.server_uuid for domain in report.kept}
    report.missing = sorted(uuid for uuid, server in known.items()
                            if server.active and uuid not in present)
    return report


def remove_strays(attacher: Attacher, known: Collection[str]) -> list[OrderResult]:
    """Destroy the domains passthru made for servers not in `known` (the servers the
    controller has on this host in any state); returns how each destroy went. Only a
    domain with the server's own UUID counts as made for it: one that merely has its
    name is someone else's."""
    strays = [(name, server_uuid) for name in attacher.driver.names()
              if (server_uuid := _server_uuid(name)) is not None and server_uuid not in known]
    return [attacher.destroy(DestroyOrder(server_uuid, name)) for name, server_uuid in strays
            if _made_for(attacher.driver, name, server_uuid)]


def _made_for(driver: LibvirtDriver, name: str, server_uuid: str) -> bool:
    try:
        return driver.uuid(name) == server_uuid
    except DomainNotFoundError:
        return False  # gone meanwhile
