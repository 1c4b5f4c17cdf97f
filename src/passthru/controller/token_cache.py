"""Who each token is, kept in memory by each replica: a request whose token was seen
before costs no lookup in the store, and no thread.

The promise kept is `controller.auth`'s: a token fails on its next use once it expires,
or once it is revoked, on every replica. An entry is what the store said of a token
(`auth.Known`: its principal and its expiry); its expiry is checked on every use. What the
cache holds is dropped whenever the set of tokens changes, which the store's triggers
(migration 0008_reqpath) tell, whatever wrote to it (the API, `passthru
admin-token-rotate`, an operator's SQL):

- SQLite: a trigger bumps the `tokens` topic; each use reads its version (one
  primary-key read, a few µs, on a connection of the cache's own, in the event loop: a
  WAL reader waits for no writer), so every commit counts at once, whichever process
  made it (another `passthru serve` on the file, say). A token is looked up in the
  event loop too, on another connection of the cache's own (tens of µs: a worker thread
  cost ten times that), and in a worker thread only when the file is busy. An agent's
  token is used once a long-poll, minutes apart, so its entry has always run out.
- PostgreSQL: reading a version would cost a round trip, as much as the lookup. There
  the trigger sends NOTIFY (`auth.TOKENS_CHANNEL`, delivered only if the transaction
  commits), which each replica's listening connection (`controller.store.wakeups`) takes: a
  change made elsewhere counts from when its notification arrives (a millisecond or so
  after the commit), one made through this process at once, on commit. While the
  listening connection is down, and until it is first up, nothing is kept: every
  request looks its token up as before.

An entry is kept only if nothing was dropped between the moment its lookup began and
its end (a `generation` counts the drops), so that a lookup which raced a revoke cannot
bring the revoked token back. Entries are looked up again after `seconds`, a bound for
a notification lost without the listening connection noticing. Unknown tokens are not
kept (a new token works at once, and guessing fills no memory); at most `max_entries`
are, the cache starts over when full.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from functools import partial

import anyio.to_thread
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from passthru.controller.auth import TOKENS_CHANGED, Known, digest, known_token
from passthru.controller.store import topics
from passthru.controller.store.db import Store


@dataclass(frozen=True, slots=True)
class _Entry:
    known: Known
    #: `time.monotonic()` after which the entry is looked up again.
    until: float


class TokenCache:
    """The tokens `store` knows, as far as this replica has seen them."""

    def __init__(self, store: Store, seconds: float, max_entries: int = 1 << 17) -> None:
        self._store = store
        self._seconds = seconds
        self._max_entries = max_entries
        # Taken on the event loop and in the store's worker threads (their commits).
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._generation = 0
        self._version: sqlite3.Connection | None = None
        #: SQLite: where tokens are looked up in the event loop.
        self._reader: Engine | None = None
        self._seen_version = -1
        if store.engine.dialect.name == "sqlite":
            path = store.engine.url.database or ""
            self._version = _read_only(path)
            self._reader = create_engine("sqlite://", creator=partial(_read_only, path),
                                         poolclass=StaticPool)
        #: Whether entries may be kept now (PostgreSQL: while notifications are heard).
        self._live = seconds > 0 and self._version is not None
        store.listen("after_commit", self._committed)

    async def known(self, token: str) -> Known:
        """What the store knows of `token` (UnauthorizedError if nothing), from memory
        when it may be."""
        key = digest(token)
        generation = self._current()
        if generation is not None:
            entry = self._entries.get(key)
            if entry is not None and time.monotonic() < entry.until:
                return entry.known
        found = self._look_up_here(token)
        if found is None:
            found = await anyio.to_thread.run_sync(self._look_up, token)
        if generation is not None:
            with self._lock:
                if generation == self._generation:
                    if len(self._entries) >= self._max_entries:
                        self._entries.clear()
                    self._entries[key] = _Entry(found, time.monotonic() + self._seconds)
        return found

    def listening(self, up: bool) -> None:
        """PostgreSQL: the notifications of token changes are heard from now on (`up`),
        or may be missed from now on."""
        with self._lock:
            self._drop()
            self._live = up and self._seconds > 0

    def notified(self, _payload: str) -> None:
        """PostgreSQL: a replica changed the set of tokens."""
        with self._lock:
            self._drop()

    def close(self) -> None:
        if self._version is not None:
            self._version.close()
        if self._reader is not None:
            self._reader.dispose()

    def _current(self) -> int | None:
        """The generation entries may be used and kept in now, None if they may not."""
        if not self._live:
            return None
        if self._version is not None:
            try:
                found = self._version.execute(_VERSION, (topics.TOKENS,)).fetchone()
            except sqlite3.Error:  # the lookup, in a worker thread, will say what is wrong
                return None
            version = found[0] if found else 0
            if version != self._seen_version:
                with self._lock:
                    self._seen_version = version
                    self._drop()
        return self._generation

    def _look_up(self, token: str) -> Known:
        with self._store.read() as session:
            return known_token(session.connection(), token)

    def _look_up_here(self, token: str) -> Known | None:
        """What the store knows of `token`, read in the event loop (SQLite); None when it
        cannot be read so (not SQLite, or the file is busy)."""
        if self._reader is None:
            return None
        try:
            with self._reader.connect() as connection:
                return known_token(connection, token)
        except DBAPIError:  # the lookup, in a worker thread, will wait or say what is wrong
            return None

    def _committed(self, session: Session) -> None:
        if session.info.pop(TOKENS_CHANGED, False):
            with self._lock:
                self._drop()

    def _drop(self) -> None:
        self._entries.clear()
        self._generation += 1


_VERSION = "SELECT version FROM topics WHERE name = ?"


def _read_only(path: str) -> sqlite3.Connection:
    """A connection to the SQLite file at `path` for the event loop, which must not wait
    on a lock (no busy timeout), and never writes."""
    connection = sqlite3.connect(path, timeout=0, isolation_level=None,
                                 check_same_thread=False)
    connection.execute("PRAGMA query_only=ON")
    return connection
