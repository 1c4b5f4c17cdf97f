"""What host agents call: inventory reports (full or delta), heart-beats, their orders
(servers to spawn, destroy and power) with the answers, what they find of the servers
placed on them (power states, console logs), and the image files their servers boot.
Answers to orders are applied exactly once per `Idempotency-Key` (`controller.agents.answers`).

A full report replaces what the controller knows of the host (its devices, and its CPUs,
memory and disk when the agent reports them); a delta carries only the
devices added, changed and removed since the generation the agent last got back. Both
name that generation (`base_generation`) and are refused with 409 when the store moved
on: the agent then heart-beats for the current generation and sends a full report. A
full report without it is taken as it comes (operators' tools, older agents). Every
report is checked whole before anything of it is applied, and a bad one gets 400 naming
its first problems. Pools are grouped here from the reported `pool_attrs` with the same
core function the agent uses.

The orders carry their version as an ETag: an agent that sends it back (If-None-Match,
with `wait`) holds a long-poll that is answered when the host's orders change, or 304
from memory when `wait` runs out (`controller.store.wakeups`); without it the orders come at
once, as they always did. They also carry the host's inventory generation
(`X-Inventory-Generation`), and a report wakes the host's long-poll, so that an idle
agent learns of a copy that moved on without heart-beating for it. Heart-beats of a host
that is up are kept in memory and written in batches (`controller.hosts.heartbeats`). An
agent's own long-poll counts as its heart-beat for as long as it is held: noted when it
comes, and its host held in `controller.hosts.heartbeats`, whose flush notes every held host
again each third of `heartbeat_timeout`, until the long-poll ends or its connection goes
(the ASGI `http.disconnect`, which ends the long-poll at once). So a host whose agent
holds a long-poll of `orders_wait_max` (minutes) is never taken for silent, on any
replica, while one whose agent went away is.

The long-poll is the one request every idle agent makes, so it is kept lean: a
coroutine (no worker thread) that takes what it needs from the app's state rather than
through dependencies, sleeps until its orders change, its wait ends or its connection
goes (no timer of its own while it waits), and a 304 without a body that reads nothing
from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, StrictInt
from sqlalchemy.orm import Session
from starlette.types import Receive

from passthru.controller.agents.answers import (
    IDEMPOTENCY_HEADER,
    KEY_PATTERN,
    AnswerKind,
    answer_once,
)
from passthru.controller.agents.orders import (
    console_output,
    destroyed,
    fail_unbuildable,
    lost,
    pending_orders,
    power_states,
    powered,
    spawned,
)
from passthru.controller.api.deps import (
    Caller,
    ImageFilesDep,
    SchedulerDep,
    SettingsDep,
    StoreDep,
)
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Key
from passthru.controller.hosts.heartbeats import Heartbeats
from passthru.controller.hosts.reports import heartbeat, host_state, report_delta, report_full
from passthru.controller.ledger import HostChanges, changes_of, with_changes
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.servers.reschedule import place_again
from passthru.controller.servers.views import loaded_server
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.lookup import find
from passthru.controller.store.mapping import image_files
from passthru.controller.store.models import HostRow, HostStatus, ImageRow, ServerRow, ServerStatus
from passthru.controller.store.wakeups import Wakeups, wake
from passthru.errors import InvalidInputError, NotFoundError
from passthru.pci.device import PciDevice
from passthru.pci.inventory import InventoryDelta
from passthru.pci.pool import DEFAULT_POOL_ATTRS
from passthru.pci.resources import HostResources
from passthru.pci.work import (
    CONSOLE_TAIL,
    GENERATION_HEADER,
    SHA256_HEADER,
    ImagePart,
    OrderResult,
    Orders,
    PowerAction,
    PowerState,
    canonical_uuid,
)

router = APIRouter(prefix="/v2/agent/hosts/{host}", tags=["agent"], responses=ERROR_RESPONSES)

PoolAttrs = list[Key]
_POOL_ATTRS = Field(list(DEFAULT_POOL_ATTRS), max_length=64,
                    description="the host's pci_flavor_attrs; 'e.*' stands for every tag")


class FullInventory(BaseModel):
    base_generation: StrictInt | None = Field(
        None, description="the generation the agent last got back (from its last report or "
        "heart-beat; 0 for a host never reported): the report is refused with 409 when the "
        "store moved past it. Without it the report is taken as it comes")
    pool_attrs: PoolAttrs = _POOL_ATTRS
    devices: list[PciDevice] = Field(max_length=65536, description="at most the "
                                     "controller's max_report_devices")
    resources: HostResources | None = Field(
        None, description="the host's CPUs, NUMA memory, disk, allocation ratios and "
        "reservations; without them VMs' vCPUs, memory and disk are not counted on the host")


class DeltaInventory(BaseModel):
    base_generation: StrictInt = Field(description="the generation the last report returned")
    pool_attrs: PoolAttrs = _POOL_ATTRS
    delta: InventoryDelta


class InventoryAccepted(BaseModel):
    host: str
    generation: int


class HostAlive(BaseModel):
    host: str
    status: HostStatus
    last_heartbeat: datetime | None
    generation: int = Field(description="the inventory generation the controller holds; an "
                            "agent whose last report got another one reports in full")


def _accepted(row: HostRow) -> InventoryAccepted:
    return InventoryAccepted(host=row.name, generation=row.generation)


def _refuse_too_many(count: int, settings: Settings) -> None:
    if count > settings.max_report_devices:
        raise InvalidInputError(f"the report carries {count} devices, more than the "
                                f"{settings.max_report_devices} this controller takes in one "
                                "report (passthru serve's max_report_devices)")


@router.put("/inventory", response_model=InventoryAccepted,
            summary="Report the host's whole inventory")
def put_inventory(host: str, who: Caller, store: StoreDep, scheduler: SchedulerDep,
                  settings: SettingsDep, body: FullInventory) -> InventoryAccepted:
    who.require_host(host)
    _refuse_too_many(len(body.devices), settings)
    with store.write() as session:
        accepted = _accepted(report_full(session, host, body.devices, body.pool_attrs,
                                         body.resources, base_generation=body.base_generation))
        wake(session, host)  # its agent's long-poll brings the new generation
        changes = changes_of(session)
    scheduler.apply(changes)
    return accepted


@router.patch("/inventory", response_model=InventoryAccepted,
              summary="Report what changed since the last accepted report")
def patch_inventory(host: str, who: Caller, store: StoreDep, scheduler: SchedulerDep,
                    settings: SettingsDep, body: DeltaInventory) -> InventoryAccepted:
    who.require_host(host)
    delta = body.delta
    _refuse_too_many(len(delta.added) + len(delta.changed) + len(delta.removed), settings)
    with store.write() as session:
        accepted = _accepted(report_delta(session, host, body.delta, body.pool_attrs,
                                          body.base_generation))
        wake(session, host)  # its agent's long-poll brings the new generation
        changes = changes_of(session)
    scheduler.apply(changes)
    return accepted


async def _heartbeats(request: Request) -> Heartbeats:
    heartbeats: Heartbeats = request.app.state.heartbeats
    return heartbeats


HeartbeatsDep = Annotated[Heartbeats, Depends(_heartbeats)]


@router.post("/heartbeat", response_model=HostAlive, summary="The host's agent is alive")
def post_heartbeat(host: str, who: Caller, store: StoreDep, scheduler: SchedulerDep,
                   heartbeats: HeartbeatsDep) -> HostAlive:
    """A host that is up is only noted, and written with others in the next batch
    (`controller.hosts.heartbeats`); one down or unknown is written at once."""
    who.require_host(host)
    with store.read() as session:
        known = host_state(session, host)
    if known is not None and known[0] is HostStatus.UP:
        return HostAlive(host=host, status=HostStatus.UP, last_heartbeat=heartbeats.note(host),
                         generation=known[1])
    with store.write() as session:
        row = heartbeat(session, host)
        alive = HostAlive(host=row.name, status=row.status, last_heartbeat=row.last_heartbeat,
                          generation=row.generation)
    if not scheduler.sees_up(host):  # a host back from down takes VMs again
        scheduler.refresh([host])
    return alive


class ServerState(BaseModel):
    server: str
    status: ServerStatus
    host: str | None
    fault: str | None


def _state(row: ServerRow) -> ServerState:
    return ServerState(server=row.uuid, status=row.status, fault=row.fault,
                       host=row.host.name if row.host else None)


def _orders_now(store: Store, scheduler: Scheduler, host: str) -> tuple[Orders, int | None]:
    """The host's orders, and its inventory generation (None: a host not known yet)."""
    with store.read() as session:
        orders, unbuildable = pending_orders(session, host)
        known = host_state(session, host)
    if unbuildable:
        with store.write() as session:
            fail_unbuildable(session, host, unbuildable)
        scheduler.refresh([host])
    return orders, None if known is None else known[1]


def _tag(version: str) -> str:
    return f'"{version}"'


async def _gone(receive: Receive) -> None:
    """Returns once the request's connection is gone: the request (its body, if any)
    was read, and what the web server gives next is `http.disconnect`."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _changed(receive: Receive, wakeups: Wakeups, host: str, version: str,
                   wait: float) -> bool:
    """Whether the orders of `host` move past `version` within `wait` seconds; False at
    once when the request's connection goes meanwhile."""
    gone = asyncio.ensure_future(_gone(receive))
    try:
        return await wakeups.wait(host, version, wait, unless=gone)
    finally:
        if not gone.cancel() and not gone.cancelled():
            gone.result()  # what reading the request raised (api.limits' refusals)


@router.get("/orders", response_model=Orders,
            summary="The host's work: servers to destroy, then servers to spawn",
            responses={304: {"description": "unchanged since the version in If-None-Match "
                             "(after waiting up to `wait` seconds for a change)"}})
async def get_orders(host: str, who: Caller, request: Request, response: Response,
                     wait: float = Query(0.0, ge=0.0, le=3600.0, description=(
                         "with If-None-Match: seconds to wait for the orders to change "
                         "before answering 304 (at most the controller's orders_wait_max)")),
                     seen: str | None = Header(None, alias="If-None-Match", description=(
                         "the ETag of the orders last got: 304 while they are unchanged")),
                     ) -> Orders | Response:
    """Answered at once without If-None-Match. With it, a long-poll
    (`controller.store.wakeups`): held without a thread until the host's orders change or
    `wait` runs out, and answered 304 from memory if they did not. The agent's own
    long-poll counts as its heart-beat while it is held (see the module)."""
    who.require_host(host)
    state = request.app.state
    settings: Settings = state.settings
    wakeups: Wakeups = state.wakeups
    heartbeats: Heartbeats = state.heartbeats
    mine = who.host == host  # an admin's read is no heart-beat
    if mine:
        heartbeats.note(host)
    if seen is not None:
        version = seen.removeprefix("W/").strip('"')
        with heartbeats.holding(host) if mine else contextlib.nullcontext():
            changed = await _changed(request.receive, wakeups, host, version,
                                     min(wait, settings.orders_wait_max))
        if not changed:
            return Response(status_code=304, headers={"ETag": _tag(version)})
    # Read before the orders: a change committed while they are read moves the version
    # past this one, so that the agent's next long-poll is answered at once.
    response.headers["ETag"] = _tag(wakeups.version(host))
    orders, generation = await anyio.to_thread.run_sync(_orders_now, state.store,
                                                        state.scheduler, host)
    if generation is not None:
        response.headers[GENERATION_HEADER] = str(generation)
    return orders


#: An answer's idempotency key: a replay with it gets the first answer's result back.
AnswerKey = Annotated[str | None, Header(
    alias=IDEMPOTENCY_HEADER, pattern=KEY_PATTERN,
    description="the agent's key for this answer (1 to 128 printable ASCII characters), "
    "the same on every retry: a replay gets the first answer's result and changes nothing")]


def _answered(store: Store, key: str | None, host: str, server: str, kind: AnswerKind,
              apply: Callable[[Session], ServerRow]
              ) -> tuple[ServerState, bool, list[HostChanges]]:
    """Apply an answer once (`controller.agents.answers`); the state it left, whether this was a
    replay of an answer already applied, and the devices it changed (for the scheduler).
    Answers share their transaction with concurrent boots and answers (`Store.grouped`)."""
    def answer(session: Session) -> tuple[dict[str, Any], bool]:
        return answer_once(session, key, host, server, kind,
                           lambda: _state(apply(session)).model_dump(mode="json"))

    (result, replay), changes = store.grouped(with_changes(answer))
    return ServerState.model_validate(result), replay, changes


@router.post("/orders/{server}/spawned", response_model=ServerState,
             summary="How a spawn went: the server becomes ACTIVE, or is placed on another "
                     "host, or goes to ERROR; a failed one frees what it held here")
def post_spawned(host: str, server: str, who: Caller, store: StoreDep,
                 scheduler: SchedulerDep, settings: SettingsDep,
                 body: OrderResult, key: AnswerKey = None) -> ServerState:
    who.require_host(host)
    _same_server(server, body)
    state, replay, changes = _answered(
        store, key, host, body.server_uuid, AnswerKind.SPAWNED,
        lambda s: spawned(s, host, body, settings.max_build_attempts))
    if replay:
        return state
    scheduler.apply(changes)
    if state.status is ServerStatus.BUILD and state.host is None:
        place_again(store, scheduler, state.server)
        with store.read() as session:
            state = _state(loaded_server(session, state.server))
    return state


@router.post("/orders/{server}/destroyed", response_model=ServerState,
             summary="How a destroy went: the server leaves the host")
def post_destroyed(host: str, server: str, who: Caller, store: StoreDep,
                   body: OrderResult, key: AnswerKey = None) -> ServerState:
    who.require_host(host)
    _same_server(server, body)
    return _answered(store, key, host, body.server_uuid, AnswerKind.DESTROYED,
                     lambda s: destroyed(s, host, body))[0]


@router.post("/orders/{server}/powered", response_model=ServerState,
             summary="How a stop, start or reboot went: the status it ends in, or the one "
                     "before with the fault")
def post_powered(host: str, server: str, who: Caller, store: StoreDep, body: OrderResult,
                 action: PowerAction | None = Query(
                     None, description="the action answered; an answer to one replaced "
                     "meanwhile is refused"), key: AnswerKey = None) -> ServerState:
    who.require_host(host)
    _same_server(server, body)
    return _answered(store, key, host, body.server_uuid, AnswerKind.POWERED,
                     lambda s: powered(s, host, body, action))[0]


class PowerStates(BaseModel):
    shutoff: list[str] = Field(description="servers ACTIVE with nothing pending whose guest "
                               "shut itself down: now SHUTOFF")


@router.post("/power-states", response_model=PowerStates,
             summary="The power state of each server's domain, as the agent finds it")
def post_power_states(host: str, who: Caller, store: StoreDep,
                      body: dict[str, PowerState] = Body(
                          max_length=100_000, examples=[{
                              "6f1d6a43-0000-4000-8000-000000000001": "running"}]),
                      ) -> PowerStates:
    who.require_host(host)
    states = {canonical_uuid(uuid): state for uuid, state in body.items()}
    return PowerStates(shutoff=store.grouped(lambda session: power_states(session, host,
                                                                          states)))




class ConsoleOutput(BaseModel):
    output: str = Field(max_length=CONSOLE_TAIL, description="the tail of the server's "
                        "serial console log")


@router.post("/orders/{server}/console", response_model=ServerState,
             summary="The tail of a server's serial console log")
def post_console(host: str, server: str, who: Caller, store: StoreDep,
                 body: ConsoleOutput) -> ServerState:
    who.require_host(host)
    uuid = canonical_uuid(server)
    return store.grouped(lambda session: _state(console_output(session, host, uuid,
                                                                body.output)))


class Lost(BaseModel):
    reason: str = Field(max_length=4096, description="why the server's domain is gone")


@router.post("/orders/{server}/lost", response_model=ServerState,
             summary="A running server's domain is gone: ERROR, and its devices are freed")
def post_lost(host: str, server: str, who: Caller, store: StoreDep, scheduler: SchedulerDep,
              body: Lost, key: AnswerKey = None) -> ServerState:
    who.require_host(host)
    uuid = canonical_uuid(server)
    state, replay, changes = _answered(store, key, host, uuid, AnswerKind.LOST,
                                       lambda s: lost(s, host, uuid, body.reason))
    if not replay:
        scheduler.apply(changes)
    return state


def _same_server(path: str, body: OrderResult) -> None:
    if canonical_uuid(path) != body.server_uuid:
        raise InvalidInputError(f"the path names server {path} but the result is for "
                                f"{body.server_uuid}")


@router.get("/images/{image}/file/{part}", response_class=FileResponse,
            summary="Download one of an image's files, its SHA-256 in X-Image-Sha256",
            responses={200: {
                "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}},
                "headers": {SHA256_HEADER: {"schema": {"type": "string"},
                                            "description": "the file's SHA-256"}}}})
def get_image_file(host: str, image: str, part: ImagePart, who: Caller, store: StoreDep,
                   files: ImageFilesDep) -> FileResponse:
    who.require_host(host)
    with store.read() as session:
        row = find(session, ImageRow, image, "image")
        name, image_id = row.name, row.id
        file = next((f for f in image_files(row) if f.part is part), None)
    path = files.path(image_id, part)
    if file is None or not path.is_file():
        raise NotFoundError(f"image {name} has no {part} file (has it been uploaded?)")
    return FileResponse(path, media_type="application/octet-stream",
                        headers={SHA256_HEADER: file.sha256})
