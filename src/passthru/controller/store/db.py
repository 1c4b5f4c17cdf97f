"""Engines and sessions for SQLite (default) and PostgreSQL.

The store may become unreachable for a while: PostgreSQL restarts or its network goes,
or SQLite stays locked past its busy timeout. `unreachable(error)` tells such errors
from a request's own faults, so that the API answers 503 (come back later) rather than
500. Every transaction goes through the `Store`, so it is the one that sees an outage
begin and end: it logs one line for each, not a traceback per request. Nothing needs a
restart afterwards: PostgreSQL connections are checked before use (`pool_pre_ping`), and
one that broke is replaced.

SQLite runs in WAL mode with `synchronous=FULL`: every commit fsyncs the write-ahead log
before it returns, so a transaction the API has answered for (a boot's 202 and its
claimed devices included) survives a crash of the process and a power loss alike. With
NORMAL a power loss could drop the last commits, and a claim the tenant was told of would
be gone. An fsync costs about 0.1 ms on an SSD; a commit pays it once, whatever it wrote.

SQLite has one writer at a time, and its busy handler is not a queue: a writer that finds
the lock taken sleeps, ever longer (up to 100 ms a time), and tries again, so one that
has waited long loses to each writer that comes just as the lock is free, and under load
some wait seconds (an agent's answer behind a stream of boots and deletes) while the lock
stands idle between the sleeps. So this process's writers take it in turns (`_Turns`), in
the order they came, each handed the lock the moment the one before commits; only other
processes' writers meet the busy handler.

Group commit (`Store.grouped`): concurrent requests whose work is one short write each
(a boot, a delete, an agent's answer to an order) share one transaction and so one
fsync. The first to come runs, in its own thread, the work of every request waiting
then, each inside a savepoint of its own, and commits them together; then it hands the
lead to the first request that came meanwhile. Each request gets its answer only once
the commit that holds its work has returned, so it is as durable as with a transaction
of its own; a work that fails rolls back its own savepoint only, and the others commit.
SQLite has one writer at a time: under load the writes queue for its lock anyway, and
grouping them makes one commit of the queue (and one hand-over of the lock). On SQLite a
single writer needs no lock order, so works of any kind may share a transaction.
PostgreSQL is left to group its commits itself (concurrent transactions share a WAL
flush), each work in a transaction of its own: one transaction holding several boots
would lock their hosts in the order the boots came, not in the documented lock order,
and deadlock against a delete.

A 503 tells a client that sending the request again is safe only if nothing of it was
stored: `count_commits()` counts the write transactions committed while one request is
served (a boot commits several), so that the API can tell the two cases apart.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

_READ_ONLY = "passthru_read_only"
#: Set in a connection's info while it holds this process's turn to write (`_Turns`).
_TURN = "passthru_write_turn"
#: How long a writer waits for SQLite's write lock before the store counts as unreachable.
_BUSY_TIMEOUT_MS = 30_000
_ON_ROLLBACK = "passthru_on_rollback"
#: The most works one group commit takes: a bound on the wait of the last of them.
GROUP_LIMIT = 64
T = TypeVar("T")
#: SQLite's result codes for a store that cannot be used now (locked past the busy
#: timeout, its file gone or unwritable), rather than for a bad statement.
_SQLITE_DOWN = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR",
                "SQLITE_FULL", "SQLITE_READONLY")
#: PostgreSQL's SQLSTATE classes for a server that is gone, starting, shutting down or
#: out of connections: 08 connection exception, 53 insufficient resources, 57P operator
#: intervention. A serialization failure or a deadlock (40) is the request's, not an outage.
_POSTGRES_DOWN = ("08", "53", "57P")


def unreachable(error: BaseException) -> bool:
    """Whether `error` means the store cannot be reached now (try again later)."""
    if isinstance(error, InterfaceError | PoolTimeoutError):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError):
        return False
    cause = error.orig
    if isinstance(cause, sqlite3.Error):
        return getattr(cause, "sqlite_errorname", "").startswith(_SQLITE_DOWN)
    # psycopg gives no SQLSTATE when it could not connect at all.
    state: str | None = getattr(cause, "sqlstate", None)
    return state is None or state.startswith(_POSTGRES_DOWN)


class _Commits:
    """How many write transactions have been committed for one request."""

    def __init__(self) -> None:
        self.count = 0


_commits: ContextVar[_Commits | None] = ContextVar("passthru_commits", default=None)


def count_commits() -> None:
    """Count, from zero, the commits made from this context (a request's task) and the
    worker threads it runs code in, which copy its context."""
    _commits.set(_Commits())


def commits_counted() -> int:
    """The commits made so far for the request being served."""
    commits = _commits.get()
    return 0 if commits is None else commits.count


class _Outage:
    """Whether the store is unreachable now, logged once when that begins and ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        first_line = next(iter(str(error).splitlines()), type(error).__name__)
        log.error("the store is unreachable, answering 503 until it is back: %s", first_line)

    def succeeded(self) -> None:
        if self._since is None:  # the common case, without taking the lock
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.warning("the store is reachable again after %.1f s", time.monotonic() - since)


class _Turns:
    """SQLite's write lock taken by this process's writers in the order they asked for
    it, each handed it as the one before commits (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    def take(self, timeout: float) -> bool:
        """Wait for this writer's turn, `timeout` seconds at most; whether it came."""
        with self._lock:
            if not self._held:
                self._held = True
                return True
            turn = threading.Event()
            self._waiting.append(turn)
        if turn.wait(timeout):
            return True
        with self._lock:
            if turn.is_set():  # handed over just as the wait ran out
                return True
            self._waiting.remove(turn)
        return False

    def give_back(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()  # still held: by the next in line now
            else:
                self._held = False


def _tune_sqlite(engine: Engine, turns: _Turns) -> None:
    def give_back(info: dict[str, Any]) -> None:
        if info.pop(_TURN, False):
            turns.give_back()

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is turned off so that `begin` below
        # decides how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: see the module's docstring for what it keeps.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        # A writer takes the write lock up front (IMMEDIATE): a deferred transaction that
        # reads and then writes fails at once with SQLITE_BUSY when another writer got in
        # between, while this one waits its turn. Readers need no lock.
        if connection.get_execution_options().get(_READ_ONLY, False):
            connection.exec_driver_sql("BEGIN")
            return
        # A writer whose turn does not come within the busy timeout is left to SQLite's
        # busy handler, which fails it (503) if the lock is still held after another.
        if turns.take(_BUSY_TIMEOUT_MS / 1000):
            connection.info[_TURN] = True
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            give_back(connection.info)
            raise

    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        # A transaction gives its connection back once it has committed (fsynced) or
        # rolled back, and so SQLite's lock: the turn passes then, not at the connection's
        # "commit" event, which comes before the commit is made.
        give_back(record.info)


def make_engine(url: str, turns: _Turns) -> Engine:
    """An engine for `url` (`sqlite:///FILE` or `postgresql+psycopg://...`); on SQLite its
    writers take `turns`."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _tune_sqlite(engine, turns)
        return engine
    return create_engine(url, pool_pre_ping=True)


def on_rollback(session: Session, undo: Callable[[], None]) -> None:
    """Call `undo` if the work of `Store.grouped` that runs in `session` does not commit
    after all (the group's commit failed), to take back what it did outside the store."""
    session.info[_ON_ROLLBACK].append(undo)


class _Work(Generic[T]):
    """One request's part of a group commit."""

    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        self.commits = _commits.get()
        self.undo: list[Callable[[], None]] = []
        self.result: T | None = None
        self.error: BaseException | None = None
        self.finished = False
        #: Made the leader: it runs the next group.
        self.lead = False
        self.woken = threading.Event()


def _undo(work: _Work[Any]) -> None:
    undos, work.undo[:] = list(work.undo), []
    for undo in reversed(undos):
        undo()


class _Group:
    """The works waiting for a group commit, and whether one is being run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[_Work[Any]] = []
        self.leading = False


class Store:
    """The database: `write()` and `read()` open one transaction each, committed when
    the block ends (before the API answers) and rolled back if it raises."""

    def __init__(self, url: str) -> None:
        self._turns = _Turns()
        self.engine = make_engine(url, self._turns)
        self._writers = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine.execution_options(**{_READ_ONLY: True}),
                                     expire_on_commit=False)
        self._outage = _Outage()
        self._group = _Group()

    def listen(self, name: str, listener: Callable[..., None]) -> None:
        """Call `listener` on the session event `name` (`sqlalchemy.orm.SessionEvents`)
        of every session the store opens."""
        event.listen(self._writers, name, listener)
        event.listen(self._readers, name, listener)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._watched(), self._writers() as session, session.begin():
            yield session
        commits = _commits.get()
        if commits is not None:
            commits.count += 1

    def grouped(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a write transaction shared with the works of concurrent
        callers (group commit on SQLite, see the module's docstring), in a savepoint of its
        own;
        return what it returned, or raise what it raised, once the transaction has
        committed (or failed: then every work of the group raises its error, and their
        `on_rollback` undos have run). `work` must not wait for other callers."""
        mine = _Work(work)
        if self.engine.dialect.name != "sqlite":  # see the module's docstring
            self._commit_group([mine])
            if mine.error is not None:
                raise mine.error
            return mine.result  # type: ignore[return-value]
        group = self._group
        with group.lock:
            group.queue.append(mine)
            if not group.leading:
                group.leading = mine.lead = True
        if not mine.lead:
            mine.woken.wait()
        if not mine.finished:
            self._lead()
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[return-value]

    def _lead(self) -> None:
        group = self._group
        with group.lock:
            works, group.queue = group.queue[:GROUP_LIMIT], group.queue[GROUP_LIMIT:]
        try:
            self._commit_group(works)
        finally:
            with group.lock:
                if group.queue:
                    group.queue[0].lead = True
                    group.queue[0].woken.set()
                else:
                    group.leading = False
            for one in works:
                one.finished = True
                one.woken.set()

    def _commit_group(self, works: list[_Work[Any]]) -> None:
        try:
            with self._watched(), self._writers() as session, session.begin():
                if len(works) == 1:  # alone: its failure rolls the transaction back
                    session.info[_ON_ROLLBACK] = works[0].undo
                    works[0].result = works[0].work(session)
                for one in works if len(works) > 1 else ():
                    session.info[_ON_ROLLBACK] = one.undo
                    try:
                        with session.begin_nested():
                            one.result = one.work(session)
                    except Exception as error:
                        one.error = error
                        _undo(one)
                session.info.pop(_ON_ROLLBACK, None)
        except BaseException as error:
            for one in works:
                if one.error is None:
                    one.error = error
                    _undo(one)
            if not isinstance(error, Exception):
                raise
            return
        for one in works:
            if one.error is None and one.commits is not None:
                one.commits.count += 1

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._watched(), self._readers() as session, session.begin():
            yield session

    @contextmanager
    def _watched(self) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            if unreachable(error):
                self._outage.failed(error)
            raise
        self._outage.succeeded()

    def close(self) -> None:
        self.engine.dispose()
