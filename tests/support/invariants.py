"""What must hold of a fleet once it has settled, whatever happened to it: read from the
store and, where given, from the hosts' libvirt domains.

`problems` lists every broken invariant in words (an empty list: all hold), so that a
failing test shows them all at once; `assert_invariants` fails with that list.

- A device has at most one owner: its owner is the server of the request it is held for,
  its status says it is held, and no PF is held while one of its VFs is.
- No leaked claim: every device held belongs to a server that exists and is alive (not
  ERROR or DELETED), and no CPU is pinned for a server that holds nothing.
- Each host's `*_used` counts are the sum of the sizes of the servers that hold room there.
- No server is left in BUILD.
- With `domains` (host name → the names of the libvirt domains on it): every passthru
  domain belongs to a server placed on that host with a domain (no orphan), and every such
  server has its domain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from passthru.controller.servers.power import PLACED
from passthru.controller.servers.release import holds_resources
from passthru.controller.store.models import (
    CpuPinRow,
    DeviceRow,
    HostRow,
    PciRequestRow,
    ServerRow,
    ServerStatus,
)
from passthru.host.attach import DOMAIN_PREFIX, domain_name
from passthru.pci.device import DeviceStatus, DevType

_HELD = {DeviceStatus.CLAIMED, DeviceStatus.ALLOCATED}
_DEAD = {ServerStatus.ERROR, ServerStatus.DELETED}


def _devices(session: Session, servers: Mapping[str, ServerRow]) -> list[str]:
    found = []
    request_server = {request: server for request, server in session.execute(
        select(PciRequestRow.uuid, PciRequestRow.server_uuid))}
    hosts = {id_: name for id_, name in session.execute(select(HostRow.id, HostRow.name))}
    rows = session.scalars(select(DeviceRow)).all()
    owned = {(row.host_id, row.address): row for row in rows if row.owner is not None}
    for row in rows:
        where = f"device {row.address} on {hosts[row.host_id]}"
        if row.owner is None:
            if row.status in _HELD:
                found.append(f"{where} is {row.status} but has no owner")
            continue
        if row.status not in _HELD:
            found.append(f"{where} is {row.status} but owned by server {row.owner}")
        holder = None if row.request_id is None else request_server.get(row.request_id)
        if holder != row.owner:
            found.append(f"{where} is owned by server {row.owner} but held for request "
                         f"{row.request_id} of server {holder}")
        server = servers.get(row.owner)
        if server is None:
            found.append(f"{where} is held by server {row.owner}, which does not exist")
        elif server.status in _DEAD:
            found.append(f"{where} is held by server {server.name} ({row.owner}), which is "
                         f"{server.status}")
        elif server.host_id != row.host_id:
            found.append(f"{where} is held by server {server.name} ({row.owner}), which is "
                         f"placed on {hosts.get(server.host_id) if server.host_id else 'no host'}")
        if row.dev_type is DevType.VF and row.parent_addr is not None:
            parent = owned.get((row.host_id, row.parent_addr))
            if parent is not None:
                found.append(f"{where} (a VF) is held by server {row.owner} while its PF "
                             f"{row.parent_addr} is held by server {parent.owner}")
    return found


def _room(session: Session, servers: Iterable[ServerRow]) -> list[str]:
    found = []
    used: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    holding = set()
    for server in servers:
        if holds_resources(server) and server.host_id is not None:
            holding.add(server.uuid)
            sums = used[server.host_id]
            sums[0] += server.vcpus
            sums[1] += server.ram_mb
            sums[2] += server.disk_gb
    for host in session.scalars(select(HostRow)):
        counted = [host.vcpus_used, host.ram_mb_used, host.disk_gb_used]
        if counted != used[host.id]:
            found.append(f"host {host.name} counts vcpus/ram_mb/disk_gb used {counted}, but "
                         f"its servers hold {used[host.id]}")
    for pin in session.scalars(select(CpuPinRow)):
        if pin.server_uuid not in holding:
            found.append(f"CPU {pin.cpu} of host {pin.host_id} is pinned for server "
                         f"{pin.server_uuid}, which holds no room there")
    return found


def _domains(servers: Iterable[ServerRow], hosts: Mapping[int, str],
             domains: Mapping[str, Iterable[str]]) -> list[str]:
    found = []
    expected: dict[str, dict[str, ServerRow]] = defaultdict(dict)
    for server in servers:
        if server.status in PLACED and server.host_id is not None:
            expected[hosts[server.host_id]][domain_name(server.uuid)] = server
    for host, names in domains.items():
        ours = {name for name in names if name.startswith(DOMAIN_PREFIX)}
        for name in sorted(ours - set(expected[host])):
            found.append(f"domain {name} on {host} belongs to no server placed there with "
                         f"a domain (an orphan)")
        for name in sorted(set(expected[host]) - ours):
            server = expected[host][name]
            found.append(f"server {server.name} ({server.uuid}) is {server.status} on {host} "
                         f"but the host has no domain {name}")
    return found


def problems(db_url: str, domains: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Every invariant the store at `db_url` (and the hosts' `domains`) break."""
    engine = create_engine(db_url)
    try:
        with Session(engine) as session:
            servers = {row.uuid: row for row in session.scalars(select(ServerRow))}
            hosts = {id_: name for id_, name in session.execute(select(HostRow.id,
                                                                       HostRow.name))}
            found = _devices(session, servers)
            found += _room(session, servers.values())
            found += [f"server {server.name} ({server.uuid}) is still BUILD on "
                      f"{hosts.get(server.host_id) if server.host_id else 'no host'}"
                      for server in servers.values() if server.status is ServerStatus.BUILD]
            if domains is not None:
                found += _domains(servers.values(), hosts, domains)
    finally:
        engine.dispose()
    return found


def assert_invariants(db_url: str, domains: Mapping[str, Iterable[str]] | None = None) -> None:
    found = problems(db_url, domains)
    assert not found, f"{len(found)} invariant(s) broken:\n" + "\n".join(found)
