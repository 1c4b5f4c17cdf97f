"""Servers: boot with a flavor's PCI requests and SR-IOV nics, show where each request's
devices are, stop, start and reboot them (Nova's server actions), read their console log,
delete (which frees every device and port the server held, in any state)."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from passthru.controller.api.deps import (
    SchedulerDep,
    StoreDep,
    TenantCaller,
    catalog_of,
    scheduler_of,
    store_of,
)
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import MAX_NAME, Name, NamePath
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.api.respond import model_answer
from passthru.controller.auth import Principal
from passthru.controller.ledger import with_changes
from passthru.controller.scheduler.placement import Placement
from passthru.controller.servers.boot import (
    MAX_USER_DATA,
    Booted,
    BootRequest,
    NicRequest,
    decode_user_data,
)
from passthru.controller.servers.launch import launch
from passthru.controller.servers.power import TASK_STATES, pending_action, request_power
from passthru.controller.servers.release import delete_server
from passthru.controller.servers.views import find_server, loaded_server, server_page
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import device_from_row, request_from_row
from passthru.controller.store.models import PciRequestRow, ServerRow, ServerStatus
from passthru.errors import InvalidInputError
from passthru.pci.binding import VnicType
from passthru.pci.device import DeviceStatus, PciDevice
from passthru.pci.request import PciRequest
from passthru.pci.work import PowerAction

#: The most servers one multi-create makes.
MAX_COUNT = 1000

router = APIRouter(prefix="/v2/{tenant_id}/servers", tags=["servers"],
                   responses=ERROR_RESPONSES)


class Nic(BaseModel):
    """A new port on network `uuid`, or the existing port `port`."""

    uuid: Name | None = Field(None, description="network UUID or name (--nic net-id=)")
    port: Name | None = Field(None, description="an existing port (--nic port-id=)")
    vnic_type: VnicType = VnicType.NORMAL
    pci_flavor: Name | None = Field(None, description="plan A: narrow to this PCI flavor")


class ServerCreate(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: Name
    flavor: Name = Field(alias="flavorRef", description="flavor UUID or name")
    image: Name | None = Field(None, alias="imageRef", description="image UUID or name")
    networks: list[Nic] = Field(default_factory=list, max_length=32)
    min_count: int = Field(1, ge=1, le=MAX_COUNT, description="boot at least this many "
                           "servers, all placed or none")
    max_count: int | None = Field(None, ge=1, le=MAX_COUNT, description="boot up to this "
                                  "many servers, as many as fit (default: min_count); with "
                                  "more than one they are named NAME-1, NAME-2, ...")
    return_reservation_id: bool = Field(False, description="answer with the multi-create's "
                                        "reservation_id instead of its servers, as Nova")
    key_name: Name | None = Field(None, description="a keypair of the project: its public "
                                  "key goes into the cloud-init seed")
    # Room for the base64 of MAX_USER_DATA with line breaks; the decoded size is checked.
    user_data: str | None = Field(None, max_length=MAX_USER_DATA * 3 // 2,
                                  description="base64 of the cloud-init user-data, at most "
                                  "64 KiB decoded")


class ServerCreateBody(BaseModel):
    server: ServerCreate


class ServersCreated(BaseModel):
    server: Server = Field(description="the first server")
    servers: list[Server] = Field(description="every server of a multi-create")


class Reservation(BaseModel):
    reservation_id: str = Field(description="names the multi-create in its servers' "
                                "creation events")


class RequestDevices(BaseModel):
    """One PCI request and the devices allocated to it."""

    request: PciRequest
    source_flavor: str | None
    devices: list[PciDevice]


class Server(BaseModel):
    id: str
    name: str
    project_id: str
    status: ServerStatus
    task_state: str | None = Field(None, description="the power change the host has yet to "
                                   "answer, in Nova's words: powering-off, powering-on, "
                                   "rebooting, rebooting_hard")
    fault: str | None
    flavor: str | None
    image: str | None
    host: str | None
    ports: list[str]
    key_name: str | None
    pci_requests: list[RequestDevices]
    domain_xml: str | None = Field(None, description="the libvirt domain XML the host's "
                                   "agent started the server with")
    created: datetime
    updated: datetime


class ServerBody(BaseModel):
    server: Server


class ServerList(PagedList):
    servers: list[Server]
    servers_links: Links


def _request_view(row: PciRequestRow) -> RequestDevices:
    devices = sorted(row.devices, key=lambda d: d.address)
    return RequestDevices(request=request_from_row(row), source_flavor=row.source_flavor,
                          devices=[device_from_row(d) for d in devices])


def server_view(row: ServerRow) -> Server:
    pending = pending_action(row)
    return Server(id=row.uuid, name=row.name, project_id=row.project, status=row.status,
                  task_state=TASK_STATES[pending] if pending else None, fault=row.fault,
                  flavor=row.flavor.name if row.flavor else None,
                  image=row.image.name if row.image else None,
                  host=row.host.name if row.host else None,
                  ports=[p.id for p in row.ports], key_name=row.key_name,
                  pci_requests=[_request_view(r) for r in row.requests],
                  domain_xml=row.domain_xml,
                  created=row.created_at, updated=row.updated_at)


def placed_view(server: Booted, placement: Placement) -> Server:
    """A server just placed, from what its boot wrote and the devices its claim took,
    without reading it back. The devices are shown as the claim left them: the index's
    own objects may already have moved on (a delete or an inventory report of another
    request, applied meanwhile). Its update time is the boot's, earlier than the
    claim's by the claim's milliseconds."""
    picked = placement.selection.devices
    return Server(
        id=server.uuid, name=server.name, project_id=server.project, status=ServerStatus.BUILD,
        fault=None, flavor=server.flavor, image=server.image, host=placement.host,
        ports=list(server.ports), key_name=server.key_name,
        pci_requests=[RequestDevices(
            request=r, source_flavor=server.source_flavor(r),
            devices=sorted((replace(d, tags=dict(d.tags), status=DeviceStatus.CLAIMED,
                                   owner=server.uuid, request_id=r.request_id)
                           for d in picked.get(r.request_id, ())),
                           key=lambda d: d.address)) for r in server.requests],
        created=server.created, updated=server.created)


def _project(who: Principal, tenant_id: str, all_projects: bool = True) -> str | None:
    """The project whose servers the caller sees (None: every project's): an admin finds
    any server, and lists every project's when asking for all."""
    return None if who.is_admin and all_projects else tenant_id


@router.get("", response_model=ServerList, summary="List the project's servers")
def list_servers(tenant_id: NamePath, who: TenantCaller, store: StoreDep, page: Page,
                 all_projects: bool = Query(False, description="admin: every project's"),
                 ) -> ServerList:
    """Oldest first (by creation, then UUID); the marker is a server's UUID."""
    with store.read() as session:
        rows, more = server_page(session, page, _project(who, tenant_id, all_projects))
        return ServerList(servers=[server_view(r) for r in rows],
                          servers_links=page.next_links(rows, more, lambda r: r.uuid))


def _names(spec: ServerCreate) -> list[str]:
    """The servers' names: Nova's multi_instance_display_name_template, %(name)s-%(count)d,
    when more than one may be made."""
    count = spec.min_count if spec.max_count is None else spec.max_count
    if count < spec.min_count:
        raise InvalidInputError(f"server.min_count {spec.min_count} is more than max_count "
                                f"{count}; give min_count <= max_count")
    names = [spec.name] if count == 1 else [f"{spec.name}-{n}" for n in range(1, count + 1)]
    if len(names[-1]) > MAX_NAME:
        field = "min_count" if spec.max_count is None else "max_count"
        raise InvalidInputError(f"server.name is {len(spec.name)} characters; with {field} "
                                f"{count} the servers are named NAME-1 ... NAME-{count}, so it "
                                f"may have at most {MAX_NAME - len(names[-1]) + len(spec.name)}")
    return names


@router.post("", status_code=202, response_model=ServersCreated | Reservation,
             summary="Boot servers: place each on a host and claim its devices")
def create_server(tenant_id: NamePath, who: TenantCaller, request: Request,
                  body: ServerCreateBody) -> Response:
    """One server that no host fits is kept in ERROR with the scheduler's message as its
    fault (202, as Nova). A multi-create places up to max_count servers, as many as fit,
    with one placement decision for the batch and one transaction for its claims; when
    fewer than min_count fit it is refused with 409 and the scheduler's message, and
    leaves no server and no port behind."""
    spec = body.server
    nics = tuple(NicRequest(network=n.uuid, port=n.port, vnic_type=n.vnic_type,
                            pci_flavor=n.pci_flavor) for n in spec.networks)
    names = _names(spec)
    user_data = decode_user_data(spec.user_data) if spec.user_data is not None else None
    reservation = f"r-{secrets.token_hex(4)}"
    boots = [BootRequest(name=name, project=tenant_id, flavor=spec.flavor, image=spec.image,
                         nics=nics, key_name=spec.key_name, user_data=user_data,
                         reservation=(reservation if len(names) > 1
                                      or spec.return_reservation_id else None))
             for name in names]
    store = store_of(request)
    launched = launch(store, scheduler_of(request), catalog_of(request), boots,
                      least=spec.min_count)
    if spec.return_reservation_id:
        return model_answer(Reservation(reservation_id=reservation), 202)
    views = [placed_view(one.server, one.placement) for one in launched
             if one.placement is not None]
    if len(views) != len(launched):  # the one server that failed: its fault is stored
        with store.read() as session:
            views = [server_view(loaded_server(session, launched[0].server.uuid))]
    return model_answer(ServersCreated(server=views[0], servers=views), 202)


@router.get("/{server}", response_model=ServerBody, summary="Show a server and its devices")
def show_server(tenant_id: NamePath, who: TenantCaller, store: StoreDep,
                server: NamePath) -> ServerBody:
    with store.read() as session:
        found = find_server(session, server, _project(who, tenant_id))
        return ServerBody(server=server_view(found))


@router.delete("/{server}", status_code=204,
               summary="Delete a server, freeing its devices and ports")
def delete(tenant_id: NamePath, who: TenantCaller, store: StoreDep, scheduler: SchedulerDep,
           server: NamePath) -> Response:
    # Shares its transaction with concurrent boots and agents' answers (`Store.grouped`).
    project = _project(who, tenant_id)
    _, changes = store.grouped(with_changes(
        lambda session: delete_server(session, find_server(session, server, project))))
    scheduler.apply(changes)
    return Response(status_code=204)


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RebootType(BaseModel):
    type: Literal["SOFT", "HARD"] = "SOFT"


class ConsoleLength(BaseModel):
    length: int | None = Field(None, ge=-1, le=1_000_000, description="the last LENGTH "
                               "lines; -1 or null: all that the controller has")


class ServerAction(BaseModel):
    """One of Nova's server actions: `{"os-stop": null}`, `{"os-start": null}`,
    `{"reboot": {"type": "SOFT"|"HARD"}}`, `{"os-getConsoleOutput": {"length": N}}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    stop: Empty | None = Field(None, alias="os-stop")
    start: Empty | None = Field(None, alias="os-start")
    reboot: RebootType | None = None
    console: ConsoleLength | None = Field(None, alias="os-getConsoleOutput")


class ConsoleLog(BaseModel):
    output: str = Field(description="the tail of the serial console log, as the host last "
                        "sent it (empty before it sent any)")


def _tail(text: str | None, lines: int | None) -> str:
    if not text or lines is None or lines < 0:
        return text or ""
    return "".join(text.splitlines(keepends=True)[-lines:]) if lines else ""


def _console(store: Store, who: Principal, tenant_id: str, server: str,
             lines: int | None) -> ConsoleLog:
    with store.read() as session:
        found = find_server(session, server, _project(who, tenant_id))
        return ConsoleLog(output=_tail(found.console_log, lines))


@router.post("/{server}/action", status_code=202, response_model=ServerBody,
             responses={200: {"model": ConsoleLog,
                              "description": "os-getConsoleOutput: the console log"}},
             summary="Stop, start or reboot a server, or read its console log")
def server_action(tenant_id: NamePath, who: TenantCaller, store: StoreDep, server: NamePath,
                  body: ServerAction) -> Any:
    """Stop from ACTIVE (SHUTOFF once the host answers), start from SHUTOFF, soft reboot
    from ACTIVE (REBOOT until answered), hard reboot from ACTIVE, SHUTOFF or REBOOT
    (HARD_REBOOT until answered); anything else is refused with 409, naming the server's
    state and what it allows. A stopped server keeps its devices."""
    given = body.model_fields_set
    if len(given) != 1:
        raise InvalidInputError("give exactly one action: os-stop, os-start, reboot or "
                                f"os-getConsoleOutput (got {len(given)})")
    (name,) = given
    if name == "console":
        length = body.console.length if body.console is not None else None
        return JSONResponse(_console(store, who, tenant_id, server, length).model_dump())
    hard = body.reboot is not None and body.reboot.type == "HARD"
    action = {"stop": PowerAction.STOP, "start": PowerAction.START}.get(
        name, PowerAction.HARD_REBOOT if hard else PowerAction.REBOOT)
    with store.write() as session:
        row = find_server(session, server, _project(who, tenant_id))
        request_power(session, row, action)
        uuid = row.uuid
    with store.read() as session:
        return ServerBody(server=server_view(loaded_server(session, uuid)))


@router.get("/{server}/console-log", response_model=ConsoleLog,
            summary="The tail of a server's serial console log")
def console_log(tenant_id: NamePath, who: TenantCaller, store: StoreDep, server: NamePath,
                lines: int | None = Query(None, ge=0, le=1_000_000,
                                          description="only the last LINES lines")
                ) -> ConsoleLog:
    return _console(store, who, tenant_id, server, lines)
