"""The controller's REST API as an application: `create_api(settings)` (the fleet page is
mounted beside it by `passthru.asgi`, the app `serve` runs).

Creating the app prepares the store: it applies the packaged migrations and makes sure
the data dir holds a working admin token (the data dir and its files are the owner's
alone: 0700 and 0600), and loads the scheduler's index from the store.
Every request passes `api.limits` first: a token (known to the replica's token cache, or
looked up), a rate, a body size and pace.
Uploaded image files are kept in the data dir too (`images/`).
While the app runs, the heart-beats agents send are written in batches
(`controller.hosts.heartbeats`), with PostgreSQL one connection listens for the other
replicas' order changes (`controller.store.wakeups`), a sweep marks hosts down whose agents
stopped heart-beating (after writing this replica's batch) and then
sees to stalled builds (timed out, on a host that went down, never placed) — the first
time as soon as the app starts — and the index is checked against the store, which other
controller replicas change too. Every `prune_interval` deleted servers, old events and
agents' answers are pruned (`controller.store.retention`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import version
from types import FrameType

import anyio
import anyio.to_thread
from fastapi import FastAPI

from passthru.controller.api import (
    agent,
    events,
    flavors,
    fleet,
    hosts,
    images,
    keypairs,
    networks,
    pci_flavors,
    ports,
    servers,
    tokens,
)
from passthru.controller.api.errors import install_error_handlers
from passthru.controller.api.limits import RequestLimits
from passthru.controller.auth import TOKENS_CHANNEL, ensure_admin_token
from passthru.controller.catalog.cache import Catalog
from passthru.controller.catalog.image_files import ImageFiles
from passthru.controller.hosts.heartbeats import Heartbeats
from passthru.controller.hosts.reports import mark_silent_hosts_down
from passthru.controller.ledger import changes_of
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.servers.reschedule import sweep_builds
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store, unreachable
from passthru.controller.store.migrate import upgrade
from passthru.controller.store.private_files import secure_data_dir, touch_private
from passthru.controller.store.retention import prune
from passthru.controller.store.wakeups import Wakeups, listen_url
from passthru.controller.token_cache import TokenCache

log = logging.getLogger(__name__)

#: In the order a request's path is matched against them (each route in turn): the
#: agents' first, which make most of the requests (their paths, /v2/agent/hosts/...,
#: are no project's).
ROUTERS = (agent.router, servers.router, pci_flavors.router, flavors.router, images.router,
           keypairs.router, networks.router, ports.router, hosts.router, tokens.router,
           events.router, fleet.router)


def open_store(settings: Settings) -> Store:
    """The store at its newest schema, with an admin token in the data dir, which only
    its owner may read."""
    secure_data_dir(settings.data_dir)
    if settings.db_url is None:
        touch_private(settings.sqlite_path)
    store = Store(settings.database_url)
    upgrade(store.engine)
    with store.write() as session:
        if ensure_admin_token(session, settings.admin_token_path):
            log.info("wrote a new admin token to %s", settings.admin_token_path)
    return store


def _flush_heartbeats(store: Store, scheduler: Scheduler, heartbeats: Heartbeats) -> None:
    up = heartbeats.flush(store)
    for name in up:
        log.info("host %s heart-beats again; marked up", name)
    if up:
        scheduler.refresh(up)


def _sweep_once(store: Store, scheduler: Scheduler, settings: Settings,
                heartbeats: Heartbeats) -> None:
    # This replica's heart-beats first: a host is marked down on what it last said.
    _flush_heartbeats(store, scheduler, heartbeats)
    with store.write() as session:
        down = mark_silent_hosts_down(session, settings.heartbeat_timeout)
        changes = changes_of(session)
    for name in down:
        log.warning("host %s stopped heart-beating; marked down", name)
    scheduler.apply(changes)
    swept = sweep_builds(store, scheduler, settings)
    for uuid in swept.failed:
        log.warning("build of server %s failed (timed out, or no host left)", uuid)
    for uuid in swept.placed_again:
        log.info("build of server %s: placing it on another host", uuid)


def _prune_once(store: Store, settings: Settings, stopping: threading.Event) -> None:
    pruned = prune(store, settings, stopping=stopping)
    if pruned:
        log.info("pruned %s", pruned.describe())


def create_api(settings: Settings) -> FastAPI:
    store = open_store(settings)
    scheduler = Scheduler(store, settings.weigher, settings.loaded_devices)
    scheduler.load()
    postgres = store.engine.dialect.name == "postgresql"
    wakeups = Wakeups()
    wakeups.attach(store, notify=postgres)
    tokens = TokenCache(store, settings.token_cache_seconds)
    wakeups.subscribe(TOKENS_CHANNEL, tokens)
    # A held long-poll's host is noted every third of the timeout (api.agent).
    heartbeats = Heartbeats(settings.heartbeat_timeout / 3)
    flush_every = min(settings.heartbeat_flush_interval, settings.heartbeat_timeout / 4)

    # A round of pruning (in a worker thread, which cannot be cancelled) stops at its
    # next batch when the app shuts down, rather than keeping the shutdown waiting.
    stopping = threading.Event()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            # The sweep runs at once too: builds a stopped controller left behind are seen
            # to at start-up, not a period later.
            tasks.start_soon(partial(_every, at_once=True),
                             max(1.0, settings.heartbeat_timeout / 4), _sweep_once,
                             store, scheduler, settings, heartbeats)
            tasks.start_soon(_every, flush_every, _flush_heartbeats, store, scheduler,
                             heartbeats)
            if postgres:
                await tasks.start(wakeups.listen, listen_url(settings.database_url))
            tasks.start_soon(_every, settings.resync_interval, scheduler.resync)
            tasks.start_soon(_every, settings.prune_interval, _prune_once, store, settings,
                             stopping)
            _release_on_exit(wakeups)
            yield
            stopping.set()
            tasks.cancel_scope.cancel()
        try:
            await anyio.to_thread.run_sync(_flush_heartbeats, store, scheduler, heartbeats)
        except Exception as error:
            if not unreachable(error):
                log.exception("the last heart-beats could not be written")
        tokens.close()
        store.close()

    app = FastAPI(
        title="passthru",
        version=version("passthru"),
        description="Real PCI devices for virtual machines across a KVM/libvirt cluster. "
                    "Every call takes `Authorization: Bearer <token>`.",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.scheduler = scheduler
    app.state.catalog = Catalog()
    app.state.image_files = ImageFiles(settings.image_dir, settings.max_image_bytes)
    app.state.settings = settings
    app.state.wakeups = wakeups
    app.state.tokens = tokens
    app.state.heartbeats = heartbeats
    install_error_handlers(app)
    app.add_middleware(RequestLimits, settings=settings)
    for router in ROUTERS:
        app.include_router(router)
    return app


def _release_on_exit(wakeups: Wakeups) -> None:
    """On SIGTERM or SIGINT, answer the held long-polls before the web server's own
    handler begins its graceful shutdown, which waits for every request to end. Only
    where signals can be had (the main thread of `passthru serve`, not a test's app)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if not callable(previous):
            continue

        def release(signum: int, frame: FrameType | None,
                    previous: Callable[[int, FrameType | None], object] = previous) -> None:
            wakeups.close()
            previous(signum, frame)

        signal.signal(number, release)


async def _every(seconds: float, work: Callable[..., object], *args: object,
                 at_once: bool = False) -> None:
    """Run `work` in a worker thread every `seconds` (the first time at once, if `at_once`);
    a failed round is retried next time."""
    while True:
        if not at_once:
            await anyio.sleep(seconds)
        at_once = False
        try:
            await anyio.to_thread.run_sync(work, *args)
        except Exception as error:
            if not unreachable(error):  # the store logs its outages, once each
                log.exception("%s failed; trying again in %.0f s", work.__name__, seconds)
