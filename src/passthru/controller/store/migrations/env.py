"""Alembic environment: runs on the connection that `controller.store.migrate` hands over."""

from __future__ import annotations

from alembic import context

from passthru.controller.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters tables by copying them; batch mode does that for us.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
