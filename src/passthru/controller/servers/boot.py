"""Booting a server: the server row, its ports and its PCI requests.

Everything a boot asks for becomes `PciRequest`s here: the flavor's
`pci_passthrough:pci_flavor` (and Nova's `pci_passthrough:alias`) extra spec, and one
request per SR-IOV `--nic`, on the nic's network's physical_network (the seed's plan B),
narrowed to the nic's PCI flavor when it names one (plan A). The image's
`pci_passthrough:supported` narrows the alternatives. Placing the server on a host and
claiming devices is the scheduler's part; until it runs the server stays BUILD.

The server keeps the flavor's size (vCPUs, RAM, disk), which its host counts, whatever
becomes of the flavor later; and its key name and user-data for its cloud-init seed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.orm import Session

from passthru.controller.catalog.cache import Catalog, Flavor
from passthru.controller.catalog.keypairs import find_keypair
from passthru.controller.catalog.networks import visible_network
from passthru.controller.catalog.pci_flavors import flavor_requests, supported_flavors
from passthru.controller.catalog.ports import attach_port, create_port
from passthru.controller.enums import EventKind
from passthru.controller.store.lookup import find
from passthru.controller.store.mapping import request_columns, vm_size
from passthru.controller.store.models import (
    EventRow,
    ImageRow,
    ImageStatus,
    PciRequestRow,
    PortRow,
    ServerRow,
    ServerStatus,
    new_uuid,
    utcnow,
)
from passthru.errors import ConflictError, InvalidInputError, NotFoundError
from passthru.pci.binding import VnicType
from passthru.pci.request import (
    NUMA_POLICY_KEY,
    PciRequest,
    RequestSource,
    check_flavor_names,
    narrow_to_supported,
    parse_numa_policy,
)
from passthru.pci.resources import CPU_POLICY_KEY, VmSize, parse_cpu_policy

_SERVERS = ServerRow.__table__
_REQUESTS = PciRequestRow.__table__
_EVENTS = EventRow.__table__


@dataclass(frozen=True, slots=True)
class NicRequest:
    """One `--nic`: a new port on `network`, or the existing port `port`."""

    network: str | None = None
    port: str | None = None
    vnic_type: VnicType = VnicType.NORMAL
    pci_flavor: str | None = None


@dataclass(frozen=True, slots=True)
class BootRequest:
    name: str
    project: str
    flavor: str
    image: str | None = None
    nics: tuple[NicRequest, ...] = ()
    key_name: str | None = None
    #: The decoded user-data (`decode_user_data`).
    user_data: str | None = None
    #: The reservation_id of the multi-create it is one of (in its creation event).
    reservation: str | None = None


#: Nova's limit on a server's user-data, decoded.
MAX_USER_DATA = 64 * 1024


def decode_user_data(text: str) -> str:
    """The user-data of a boot body: base64 (line breaks allowed) of at most 64 KiB of
    text, as cloud-init reads it from the seed."""
    fix = "send the file base64-encoded (passthru boot --user-data FILE does it)"
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"user_data is not valid base64; {fix}") from None
    if len(raw) > MAX_USER_DATA:
        raise InvalidInputError(f"user_data is {len(raw)} bytes decoded; at most {MAX_USER_DATA} "
                                "are taken (as Nova); fetch the rest from the guest instead")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InvalidInputError("user_data is not UTF-8 text once decoded (a #cloud-config or a "
                                "script); compressed user-data is not taken") from None
    if "\x00" in text:
        raise InvalidInputError(f"user_data holds a NUL byte at offset {raw.index(0)}; it must "
                                "be text (a #cloud-config or a script)")
    return text


def _image(session: Session, ref: str) -> ImageRow:
    image = find(session, ImageRow, ref, "image",
                 create_hint="list them with passthru image-list")
    if image.status is ImageStatus.QUEUED:
        raise ConflictError(f"image {image.name} is queued: its disk has not been uploaded "
                            "yet; upload it (PUT .../images/{id}/file/disk, or create the "
                            "image with passthru image-create --file) or boot another image")
    return image


def _nic_port(session: Session, server: str, project: str, nic: NicRequest,
              index: int) -> PortRow:
    where = f"--nic #{index + 1}"
    if (nic.network is None) == (nic.port is None):
        raise InvalidInputError(f"{where}: give either net-id=NETWORK or port-id=PORT")
    if nic.port is not None:
        if nic.vnic_type is not VnicType.NORMAL or nic.pci_flavor is not None:
            raise InvalidInputError(f"{where}: port {nic.port} already has its vnic type and pci "
                                    "flavor; drop vnic-type= and pci-flavor= or use net-id=")
        return attach_port(session, nic.port, project, server, where)
    network = visible_network(session, nic.network or "", project)
    return create_port(session, network, project, vnic_type=nic.vnic_type,
                       pci_flavor=nic.pci_flavor, server=server)


def port_request(port: PortRow, flavor: Flavor) -> PciRequest | None:
    """What an SR-IOV port asks for: one device of its vnic type on its network."""
    dev_type = port.vnic_type.dev_type
    if dev_type is None:
        return None
    return PciRequest(
        count=1,
        alternatives=(port.pci_flavor,) if port.pci_flavor else (),
        source=RequestSource.PORT,
        numa_policy=parse_numa_policy(flavor.extra_specs.get(NUMA_POLICY_KEY)),
        physical_network=port.network.physical_network,
        dev_type=dev_type,
        port_id=port.id,
    )


def pci_requests(session: Session, flavor: Flavor, known: frozenset[str],
                 image: ImageRow | None, ports: Sequence[PortRow]) -> list[PciRequest]:
    """The server's requests, their PCI flavors checked against `known` (the catalog's)."""
    requests = flavor_requests(flavor.name, flavor.extra_specs)
    requests += [r for port in ports if (r := port_request(port, flavor)) is not None]
    named = {name for r in requests for name in r.alternatives}
    check_flavor_names(requests, Catalog.pci_flavors_for(session, known, named),
                       where=f"flavor {flavor.name}")
    supported = supported_flavors(image.properties) if image is not None else None
    if image is not None and supported is not None:
        requests = narrow_to_supported(requests, supported, image=f"image {image.name}")
    return requests


@dataclass(frozen=True, slots=True)
class Booted:
    """A server as its boot wrote it: BUILD, on no host yet."""

    uuid: str
    name: str
    project: str
    flavor: str
    image: str | None
    key_name: str | None
    ports: tuple[str, ...]
    requests: tuple[PciRequest, ...]
    #: What it takes of its host (`mapping.server_size` of its row).
    size: VmSize
    created: datetime
    #: The version of topic pci_flavors its requests were checked at.
    pci_flavors_version: int

    def source_flavor(self, request: PciRequest) -> str | None:
        """The flavor a request came from, as its row says (None: a port's)."""
        return self.flavor if request.source is RequestSource.FLAVOR else None


def boot_server(session: Session, catalog: Catalog, boot: BootRequest) -> Booted:
    """Create the server with its ports and PCI requests; it stays BUILD until placed."""
    return boot_servers(session, catalog, [boot])[0]


@dataclass(frozen=True, slots=True)
class _Shared:
    """What the boots of one flavor, image and key have in common, checked once."""

    flavor: Flavor
    known: frozenset[str]
    pci_version: int
    image: ImageRow | None
    #: The requests and size of a server without nics, as a pattern (each server has
    #: request ids of its own).
    requests: tuple[PciRequest, ...] | None = None
    size: VmSize | None = None


#: What boots share their `_Shared` by: flavor, image, key name and project.
_Key = tuple[str, str | None, str | None, str]


def _shared(session: Session, catalog: Catalog, boot: BootRequest) -> _Shared:
    flavor, known, pci_version = catalog.lookup(session, boot.flavor)
    image = _image(session, boot.image) if boot.image else None
    if boot.key_name is not None:
        try:
            find_keypair(session, boot.project, boot.key_name, keep=True)
        except NotFoundError as error:
            raise InvalidInputError(f"key_name: {error}") from None
    parse_cpu_policy(flavor.extra_specs.get(CPU_POLICY_KEY))  # refused before anything exists
    return _Shared(flavor, known, pci_version, image)


def boot_servers(session: Session, catalog: Catalog, boots: Sequence[BootRequest]
                 ) -> list[Booted]:
    """Create the servers with their ports and PCI requests; they stay BUILD until placed.

    The flavor, image and key are looked up once per distinct (flavor, image, key,
    project) of the boots (a multi-create has one), and servers without nics share one
    check of their requests, each with request ids of its own. The rows are plain inserts
    on the session's connection, one statement per table for every server (the servers,
    their requests, their events); only ports, which have rules of their own, go through
    the ORM."""
    shared: dict[_Key, _Shared] = {}
    # A microsecond apart, in order: servers are listed oldest first, then by UUID.
    start = utcnow()
    times = [start + timedelta(microseconds=n) for n in range(len(boots))]
    uuids = [new_uuid() for _ in boots]
    keys = [(boot.flavor, boot.image, boot.key_name, boot.project) for boot in boots]
    for key, boot in zip(keys, boots, strict=True):
        if key not in shared:
            shared[key] = _shared(session, catalog, boot)
    contexts = [shared[key] for key in keys]
    connection = session.connection()
    # The size is fixed now: the host counts it for the server's life, whatever becomes
    # of the flavor.
    connection.execute(insert(_SERVERS), [{
        "uuid": uuid, "name": boot.name, "project": boot.project, "flavor_id": c.flavor.id,
        "image_id": c.image.id if c.image is not None else None,
        "status": ServerStatus.BUILD, "vcpus": c.flavor.vcpus, "ram_mb": c.flavor.ram_mb,
        "disk_gb": c.flavor.disk_gb, "key_name": boot.key_name, "user_data": boot.user_data,
        "created_at": now, "updated_at": now}
        for uuid, boot, c, now in zip(uuids, boots, contexts, times, strict=True)])
    ports = [[_nic_port(session, uuid, boot.project, nic, i) for i, nic in enumerate(boot.nics)]
             for uuid, boot in zip(uuids, boots, strict=True)]
    if any(ports):
        session.flush()  # the requests name their ports
    booted = [_booted(session, shared, key, uuid, boot, own, now)
              for key, uuid, boot, own, now in zip(keys, uuids, boots, ports, times,
                                                   strict=True)]
    rows = [{**request_columns(r, position, server.source_flavor(r)), "server_uuid": server.uuid}
            for server in booted for position, r in enumerate(server.requests)]
    if rows:
        connection.execute(insert(_REQUESTS), rows)
    connection.execute(insert(_EVENTS), [{
        "time": server.created, "kind": str(EventKind.SERVER_CREATED), "server": server.uuid,
        "message": f"server {boot.name} of project {boot.project}, flavor {server.flavor}"
                   + (f", reservation {boot.reservation}" if boot.reservation else "")}
        for server, boot in zip(booted, boots, strict=True)])
    return booted


def _booted(session: Session, shared: dict[_Key, _Shared], key: _Key, uuid: str,
            boot: BootRequest, ports: list[PortRow], now: datetime) -> Booted:
    context = shared[key]
    flavor, image = context.flavor, context.image
    if ports or context.requests is None or context.size is None:
        requests = tuple(pci_requests(session, flavor, context.known, image, ports))
        size = vm_size(flavor.vcpus, flavor.ram_mb, flavor.disk_gb, flavor.extra_specs, ports)
        if not ports:
            shared[key] = replace(context, requests=requests, size=size)
    else:
        requests = tuple(replace(r, request_id=new_uuid()) for r in context.requests)
        size = context.size
    return Booted(uuid, boot.name, boot.project, flavor.name,
                  image.name if image is not None else None, boot.key_name,
                  tuple(port.id for port in ports), requests, size, now, context.pci_version)
