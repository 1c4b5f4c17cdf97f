"""Pruning what the store no longer needs: deleted servers, old events, agents' answers
and expired tokens.

- A DELETED server is kept `keep_deleted_days` after its deletion (its row answers
  `show` with DELETED, and names it in the event history), then pruned with its PCI
  requests and pinned CPUs (the foreign keys cascade). One still on a host, waiting for
  its agent to destroy the domain, is a pending order and is never pruned.
- Events are kept `keep_events_days`, and at most `max_events` of them (the newest).
  When `events_archive` is set, each event is appended to that file as one JSON line
  (the fields `GET /v2/{tenant}/os-events` answers) before it is deleted, and the file
  is flushed to disk before the deletion commits: an event is archived at least once,
  never lost. The events go first, while their servers still name them.
- An agent's answer is kept `keep_answers_hours` for its replays.
- A token that expired more than `keep_deleted_days` ago is removed from the list.

Deletes go in batches of `BATCH` rows, each its own short transaction with a pause after
it: SQLite has one writer, and a prune of a million events must not hold its lock for
more than a moment at a time, nor take it back before the writers queued for it got in
(without the pause, a writer waited 1.3 s on median while 200,000 events went). On
PostgreSQL each batch locks its rows with SKIP LOCKED, so that replicas pruning at once
take disjoint batches and no event is archived by two of them.
A setting of 0 keeps those rows for ever.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import event_record
from passthru.controller.store.models import (
    AnswerRow,
    EventRow,
    ServerRow,
    ServerStatus,
    TokenRow,
    utcnow,
)
from passthru.controller.store.private_files import append_private
from passthru.errors import PassthruError

#: Rows deleted per transaction.
BATCH = 1000
#: The pause after each batch: longer than SQLite's busy handler waits between two tries
#: (100 ms at most), so a writer that queued for the lock gets it before the next batch.
PAUSE = 0.1


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows one prune removed."""

    servers: int = 0
    events: int = 0
    answers: int = 0
    tokens: int = 0

    def __bool__(self) -> bool:
        return any((self.servers, self.events, self.answers, self.tokens))

    def describe(self) -> str:
        return (f"{self.events} event(s), {self.servers} deleted server(s), "
                f"{self.answers} agent answer(s), {self.tokens} expired token(s)")


class _Batches:
    """Deletes in batches until done or until `stopping` is set (the controller is
    shutting down: the next round goes on from there)."""

    def __init__(self, store: Store, stopping: threading.Event | None) -> None:
        self.store = store
        self.stopping = stopping or threading.Event()

    def delete(self, key: InstrumentedAttribute[Any], where: Sequence[ColumnElement[bool]],
               each: Callable[[Session, list[Any]], None] | None = None) -> int:
        """Delete the rows of `key`'s table that match `where`, `BATCH` at a time, oldest
        key first; `each` sees each batch's keys before they go. Returns how many went."""
        table = key.class_
        total = 0
        while not self.stopping.is_set():
            with self.store.write() as session:
                query: Select[tuple[Any]] = (select(key).where(*where).order_by(key)
                                             .limit(BATCH).with_for_update(skip_locked=True))
                keys = list(session.scalars(query))
                if not keys:
                    return total
                if each is not None:
                    each(session, keys)
                session.execute(delete(table).where(key.in_(keys))
                                .execution_options(synchronize_session=False))
            total += len(keys)
            if len(keys) < BATCH:
                return total
            self.stopping.wait(PAUSE)
        return total


def _archiver(path: Path) -> Callable[[Session, list[Any]], None]:
    """Appends the events of a batch to `path` as JSON lines, on disk before they go."""

    def archive(session: Session, ids: list[Any]) -> None:
        rows = session.execute(select(EventRow, ServerRow.name, ServerRow.project)
                               .outerjoin(ServerRow, ServerRow.uuid == EventRow.server)
                               .where(EventRow.id.in_(ids)).order_by(EventRow.id))
        lines = "".join(json.dumps(event_record(row, name, project), default=str) + "\n"
                        for row, name, project in rows)
        try:
            with os.fdopen(append_private(path), "a") as file:
                file.write(lines)
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            raise PassthruError(f"cannot append to the events archive {path} "
                                f"({error.strerror}); the events stay in the store until "
                                "it can be written") from None

    return archive


def _days(days: float) -> timedelta | None:
    return timedelta(days=days) if days > 0 else None


def _prune_events(batches: _Batches, settings: Settings, now: datetime) -> int:
    archive = _archiver(settings.events_archive) if settings.events_archive else None
    pruned = 0
    if age := _days(settings.keep_events_days):
        pruned += batches.delete(EventRow.id, [EventRow.time < now - age], archive)
    if settings.max_events > 0:
        with batches.store.read() as session:
            # The newest event beyond the limit: it and every older one go.
            last = session.scalar(select(EventRow.id).order_by(EventRow.id.desc())
                                  .offset(settings.max_events).limit(1))
        if last is not None:
            pruned += batches.delete(EventRow.id, [EventRow.id <= last], archive)
    return pruned


def prune(store: Store, settings: Settings, now: datetime | None = None,
          stopping: threading.Event | None = None) -> Pruned:
    """One round of pruning, by the ages and count `settings` keep; it ends early, at a
    batch's end, once `stopping` is set."""
    now = now or utcnow()
    batches = _Batches(store, stopping)
    events = _prune_events(batches, settings, now)
    servers = tokens = answers = 0
    if age := _days(settings.keep_deleted_days):
        servers = batches.delete(ServerRow.uuid, [
            ServerRow.status == ServerStatus.DELETED, ServerRow.host_id.is_(None),
            ServerRow.updated_at < now - age])
        tokens = batches.delete(TokenRow.id, [TokenRow.expires_at < now - age])
    if settings.keep_answers_hours > 0:
        answers = batches.delete(AnswerRow.key, [
            AnswerRow.created_at < now - timedelta(hours=settings.keep_answers_hours)])
    return Pruned(servers=servers, events=events, answers=answers, tokens=tokens)
