"""Heart-beats kept in memory and written in batches, so that an idle fleet costs no
write transaction per heart-beat.

A host that is up and heart-beats is only noted here (the time, per host, in this
replica's memory); every `heartbeat_flush_interval` seconds one statement, executed for
the batch, moves each noted host's `last_heartbeat` forward (never back: another replica
may have written a later one). A heart-beat from a host the store has down or does not
know yet is written at once (`reports.heartbeat`), so a host comes back up on its first
heart-beat; one that went down between being noted and the flush is brought up by the
flush the same way. "Down" keeps its meaning: the sweep that marks silent hosts down
flushes this replica's batch first, and the flush interval is far below
`heartbeat_timeout`, so another replica's batch not yet written cannot make a live host
look silent.

An agent's held orders long-poll, minutes long, is its heart-beat (`api.agent`): noted
when it comes, and its host is held here for as long as the long-poll waits and its
connection stands (it leaves when the long-poll ends, or at once when the connection
goes). The flush that comes a third of `heartbeat_timeout` or more after the last one
that did notes every held host in one go, so a held long-poll wakes nothing while it
waits, and its host's `last_heartbeat` in the store never falls that far behind,
whichever replica sweeps; a host whose agent went away is noted no more. What is lost
with a killed replica is at most one interval of heart-beats, each of which the next
one repeats (its agents' long-polls break and come again, to another replica).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import bindparam, or_, select, update

from passthru.controller.hosts.reports import heartbeat
from passthru.controller.store.db import Store
from passthru.controller.store.models import HostRow, HostStatus, utcnow

#: Hosts per statement: well below SQLite's bound on a statement's parameters.
_BATCH = 1000

_FORWARD = (update(HostRow.__table__)
            .where(HostRow.__table__.c.name == bindparam("host"),
                   or_(HostRow.__table__.c.last_heartbeat.is_(None),
                       HostRow.__table__.c.last_heartbeat < bindparam("seen")))
            .values(last_heartbeat=bindparam("seen")))


class Heartbeats:
    """The heart-beats this replica took since its last flush (host -> when, UTC), and
    the hosts whose agents' long-polls it holds, noted every `held_every` seconds."""

    def __init__(self, held_every: float) -> None:
        self._lock = threading.Lock()
        #: Held by a flush from taking the heart-beats until they are written.
        self._flushing = threading.Lock()
        self._seen: dict[str, datetime] = {}
        #: Host -> how many of its long-polls are held (an agent that came back while
        #: its old connection still stands has two).
        self._held: dict[str, int] = {}
        self._held_every = held_every
        self._held_next = time.monotonic() + held_every

    def note(self, host: str, when: datetime | None = None) -> datetime:
        """`host`'s agent is alive now (or at `when`); returns that time."""
        when = when or utcnow()
        with self._lock:
            self._seen[host] = when
        return when

    @contextmanager
    def holding(self, host: str) -> Iterator[None]:
        """`host` counts as alive while the block runs (its agent's long-poll is held)."""
        with self._lock:
            self._held[host] = self._held.get(host, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._held.pop(host) - 1
                if left:
                    self._held[host] = left

    def held(self) -> int:
        """How many hosts count as alive for a long-poll held now."""
        with self._lock:
            return len(self._held)

    def pending(self) -> int:
        with self._lock:
            return len(self._seen)

    def flush(self, store: Store) -> list[str]:
        """Write the heart-beats noted so far; returns the hosts this brought up (or
        made known), with the held hosts when they are due. Kept for the next flush if
        the store cannot take them now. Flushes run one at a time: one that returns has
        every heart-beat noted before it written, also those another flush had taken."""
        with self._flushing:
            with self._lock:
                if time.monotonic() >= self._held_next:
                    now = utcnow()
                    self._seen.update(dict.fromkeys(self._held, now))
                    self._held_next = time.monotonic() + self._held_every
                seen, self._seen = self._seen, {}
            if not seen:
                return []
            try:
                return _write(store, seen)
            except BaseException:
                with self._lock:  # a newer heart-beat noted meanwhile wins
                    self._seen = {**seen, **self._seen}
                raise


def _write(store: Store, seen: Mapping[str, datetime]) -> list[str]:
    brought_up: list[str] = []
    hosts = sorted(seen)  # one order for every writer's row locks
    with store.write() as session:
        connection = session.connection()
        for start in range(0, len(hosts), _BATCH):
            batch = hosts[start:start + _BATCH]
            connection.execute(_FORWARD, [{"host": host, "seen": seen[host]} for host in batch])
            up = set(session.scalars(select(HostRow.name).where(
                HostRow.name.in_(batch), HostRow.status == HostStatus.UP)))
            for host in (h for h in batch if h not in up):
                heartbeat(session, host, seen[host])
                brought_up.append(host)
    return brought_up
