"""Engines and sessions for SQLite (default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_READ_ONLY = "passthru_read_only"


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is turned off so that `begin` below
        # decides how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # NORMAL in WAL mode keeps every committed transaction across a crash of the
        # process (only a power loss can drop the last ones), at a fraction of FULL's fsyncs.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        # A writer takes the write lock up front (IMMEDIATE): a deferred transaction that
        # reads and then writes fails at once with SQLITE_BUSY when another writer got in
        # between, while this one waits its turn (busy_timeout). Readers need no lock.
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for `url` (`sqlite:///FILE` or `postgresql+psycopg://...`)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _tune_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """The database: `write()` and `read()` open one transaction each, committed when
    the block ends (before the API answers) and rolled back if it raises."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._writers = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine.execution_options(**{_READ_ONLY: True}),
                                     expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._writers() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._readers() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()
