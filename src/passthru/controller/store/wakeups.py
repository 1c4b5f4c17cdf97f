"""Orders pushed to agents: a version of each host's orders kept in memory, and a way to
wait, without a thread, until it changes.

Every transaction that changes what a host's agent must do (a server placed on it,
deleted, failed or moved off it, a power action asked) names the host with
`wake(session, host)`, a one-line call beside the change. Nothing is woken then: the
store's sessions tell `Wakeups` after they commit (SQLAlchemy `after_commit`), so a
transaction rolled back wakes nobody, and an agent woken always reads the change.

An agent long-polls its orders (`GET .../orders?wait=S` with the version it last saw as
`If-None-Match`). Long-polling rather than a server-sent event stream: every answer is a
whole orders document, so nothing is lost when a connection breaks or an agent moves to
another replica (there is no stream position to resume); the request is an ordinary GET
that every proxy, the CLI and older agents understand; and a change costs one orders
read whichever way it is sent. A waiting request holds a future on the event loop, not a
thread, and an answer "unchanged" comes from memory.

A version is `<replica>.<epoch>.<count>`: the replica part makes a version seen on
another replica (or before a restart) count as changed, so an agent that moves gets its
orders at once. With PostgreSQL the replicas wake one another: the committing transaction
sends `NOTIFY` (delivered only if it commits) naming its replica and hosts (JSON), and each
replica keeps one connection `LISTEN`ing. Notifications missed while that connection was
down are made good by waking every host once it is back (a new epoch). A single SQLite
process needs none of that. Other parts take their own channels' notifications on the
same connection (`subscribe`; the token cache, `controller.token_cache`), and are told
when it breaks and when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

#: Where the hosts a transaction changed are kept, in its session's `info`.
_HOSTS = "passthru_wake_hosts"
#: The PostgreSQL channel replicas notify one another on.
CHANNEL = "passthru_orders"
#: A notification's payload must stay below PostgreSQL's 8000 bytes.
_PAYLOAD_BYTES = 7000
#: Seconds between attempts to listen again after the listening connection broke.
_RELISTEN_WAIT = (0.5, 30.0)


class Subscriber(Protocol):
    """Takes another channel's notifications on the listening connection."""

    def notified(self, payload: str) -> None:
        """A notification of the channel."""

    def listening(self, up: bool) -> None:
        """Notifications are heard from now on (`up`), or may be missed from now on."""


def wake(session: Session, host: str | None) -> None:
    """Wake the agent of `host` (None: no host, nothing to wake) once this session's
    transaction commits."""
    if host is not None:
        session.info.setdefault(_HOSTS, set()).add(host)


def listen_url(db_url: str) -> str:
    """The libpq address of the store `db_url` names (a SQLAlchemy URL)."""
    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Wakeups:
    """The versions of hosts' orders in this process, and the requests waiting on them.
    Versions change from any thread (the store's commits run in worker threads); the
    waiters are futures on the event loop that made them."""

    def __init__(self) -> None:
        self.replica = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._epoch = 0
        self._counts: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._closed = False
        self._subscribers: dict[str, Subscriber] = {}

    def attach(self, store: Any, *, notify: bool) -> None:
        """Wake after every commit of `store`'s sessions; with `notify` (PostgreSQL),
        tell the other replicas within the transaction."""
        store.listen("after_commit", self._committed)
        store.listen("after_soft_rollback", self._rolled_back)
        if notify:
            store.listen("before_commit", self._notify)

    def subscribe(self, channel: str, subscriber: Subscriber) -> None:
        """Give `subscriber` the notifications of `channel` too (PostgreSQL; before
        `listen`)."""
        self._subscribers[channel] = subscriber

    def version(self, host: str) -> str:
        with self._lock:
            return f"{self.replica}.{self._epoch}.{self._counts.get(host, 0)}"

    def bump(self, hosts: Iterable[str]) -> None:
        """The orders of `hosts` changed: wake whoever waits on them."""
        woken: list[asyncio.Future[None]] = []
        with self._lock:
            for host in hosts:
                self._counts[host] = self._counts.get(host, 0) + 1
                woken.extend(self._waiters.pop(host, ()))
        _resolve(woken)

    def bump_all(self) -> None:
        """Any host's orders may have changed (notifications were missed)."""
        with self._lock:
            self._epoch += 1
            woken = [future for futures in self._waiters.values() for future in futures]
            self._waiters.clear()
        _resolve(woken)

    def close(self) -> None:
        """The controller is stopping: whoever waits is answered now (unchanged), and
        nobody waits from now on, so that the waiting requests do not hold it up."""
        with self._lock:
            self._closed = True
            woken = [future for futures in self._waiters.values() for future in futures]
            self._waiters.clear()
        _resolve(woken)

    async def wait(self, host: str, seen: str, timeout: float,
                   unless: asyncio.Future[None] | None = None) -> bool:
        """Whether the orders of `host` are past version `seen`, waiting up to `timeout`
        seconds for them to be (not at all once closed), or until `unless` is done."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if f"{self.replica}.{self._epoch}.{self._counts.get(host, 0)}" != seen:
                return True
            if self._closed:
                return False
            self._waiters.setdefault(host, set()).add(future)
        if unless is not None:
            unless.add_done_callback(lambda _: _set(future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiting = self._waiters.get(host)
                if waiting is not None:
                    waiting.discard(future)
                    if not waiting:
                        del self._waiters[host]
        return self.version(host) != seen

    def waiting(self) -> int:
        """How many requests wait now."""
        with self._lock:
            return sum(len(futures) for futures in self._waiters.values())

    def _committed(self, session: Session) -> None:
        # SQLAlchemy tells a savepoint's release (a work of a group commit, `Store.grouped`)
        # as a commit too. Woken then, an agent would read its orders before the change is
        # visible, yet get the new version, and wait on it for a change that came already.
        if session.in_nested_transaction():
            return
        hosts = session.info.pop(_HOSTS, None)
        if hosts:
            self.bump(hosts)

    def _rolled_back(self, session: Session, transaction: SessionTransaction) -> None:
        # Only the whole transaction's rollback wakes nobody. A savepoint's (a work of a
        # group commit that failed, `Store.grouped`) keeps the hosts the other works
        # woke; those its own work named are woken too, which costs their agents one
        # read of unchanged orders.
        if transaction.parent is None:
            session.info.pop(_HOSTS, None)

    def _notify(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # the whole transaction notifies once, as it commits
        hosts = sorted(session.info.get(_HOSTS, ()))
        for chunk in _chunks(hosts):
            session.execute(text("SELECT pg_notify(:channel, :payload)"),
                            {"channel": CHANNEL, "payload": json.dumps([self.replica, *chunk])})

    def _notified(self, payload: str) -> None:
        replica, *hosts = json.loads(payload)
        if replica != self.replica:  # this replica's own were woken on commit
            self.bump(hosts)

    async def listen(self, url: str, *,
                     task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        """Take the other replicas' notifications until cancelled, on one connection
        to the PostgreSQL store at `url` (libpq), connecting again when it breaks.
        Started (`task_status`) once the first attempt to listen is over, so that the
        versions handed out after start-up see every change committed after them."""
        import psycopg  # only a PostgreSQL store needs the driver here

        wait = _RELISTEN_WAIT[0]
        listened = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        url, autocommit=True, keepalives=1, keepalives_idle=30) as connection:
                    for channel in (CHANNEL, *self._subscribers):
                        await connection.execute(f"LISTEN {channel}")
                    for subscriber in self._subscribers.values():
                        subscriber.listening(True)
                    wait = _RELISTEN_WAIT[0]
                    if listened:
                        self.bump_all()  # whatever was notified while nobody listened
                    else:
                        task_status.started()
                    listened = True
                    async for note in connection.notifies():
                        if note.channel == CHANNEL:
                            self._notified(note.payload)
                        else:
                            self._subscribers[note.channel].notified(note.payload)
            except psycopg.Error as error:
                for subscriber in self._subscribers.values():
                    subscriber.listening(False)
                first_line = next(iter(str(error).splitlines()), type(error).__name__)
                log.warning("cannot listen for other replicas' order changes (%s); "
                            "trying again in %.1f s", first_line, wait)
                if not listened:
                    task_status.started()
                    listened = True
                await asyncio.sleep(wait)
                wait = min(wait * 2, _RELISTEN_WAIT[1])


def _chunks(hosts: list[str]) -> Iterable[list[str]]:
    chunk: list[str] = []
    size = 0
    for host in hosts:
        spelt = len(json.dumps(host)) + 2
        if chunk and size + spelt > _PAYLOAD_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(host)
        size += spelt
    if chunk:
        yield chunk


def _resolve(futures: Iterable[asyncio.Future[None]]) -> None:
    for future in futures:
        # A loop that has closed has nobody waiting on it any more.
        with contextlib.suppress(RuntimeError):
            future.get_loop().call_soon_threadsafe(_set, future)


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
