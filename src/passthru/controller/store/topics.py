"""Versions of the shared state that controller replicas cache (`TopicRow`).

Each replica keeps some of the store in memory (the scheduler its PCI flavors, say). Every
change to such a piece of state bumps its topic's version in the same transaction as the
change, so the version read from the store says exactly whether a cache is current: a
replica compares the version it loaded with the store's (one primary-key read) before it
relies on the cache, and reads the state again when they differ. The version is read
before the state, so a cache is never older than the version it remembers (at worst it
is newer, and is read once more next time).

A topic no change has bumped yet has version 0 and no row.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from passthru.controller.store.models import TopicRow

#: The PCI flavors, which each replica's scheduler matches pools with.
PCI_FLAVORS = "pci_flavors"
#: The flavors and their extra specs, which each replica's boots look up.
FLAVORS = "flavors"
#: The set of tokens, whose principals each replica keeps (`controller.token_cache`).
TOKENS = "tokens"

_TOPICS = TopicRow.__table__


def bump(session: Session, topic: str) -> int:
    """Count one change of `topic` in this transaction; returns the new version. Two
    transactions bumping one topic queue on its row, as with any update."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(_TOPICS).values(name=topic, version=1)
    statement = statement.on_conflict_do_update(
        index_elements=[_TOPICS.c.name], set_={"version": _TOPICS.c.version + 1})
    version: int = session.execute(statement.returning(_TOPICS.c.version)).scalar_one()
    return version


def version(session: Session, topic: str) -> int:
    """The version of `topic` in the store."""
    found = session.scalar(select(TopicRow.version).where(TopicRow.name == topic))
    return found or 0


def versions(session: Session, *names: str) -> dict[str, int]:
    """The versions of several topics, in one plain statement: the table holds a row per
    topic, a handful, so all of them are read (an IN list is compiled again each time)."""
    found = {name: version for name, version in session.connection().execute(_ALL_VERSIONS)}
    return {name: found.get(name, 0) for name in names}


_ALL_VERSIONS = select(_TOPICS.c.name, _TOPICS.c.version)
