"""The request path: the store itself tells the replicas' token caches of every change
of the set of tokens (`controller.token_cache`), whoever makes it: the API, the CLI, or an
operator's SQL.

- SQLite: a trigger on `tokens` bumps the `tokens` topic, which each use of a cached
  token reads.
- PostgreSQL: a trigger on `tokens` sends NOTIFY on `passthru_tokens` (delivered only if
  the transaction commits), which each replica listens to. No topic is bumped there: no
  replica reads it, and concurrent token writes would queue on its row.

Revision ID: 0008_reqpath
Revises: 0007_views
"""

from __future__ import annotations

from alembic import op

revision = "0008_reqpath"
down_revision = "0007_views"
branch_labels = None
depends_on = None

_OPERATIONS = ("insert", "update", "delete")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION passthru_tokens_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('passthru_tokens', '');
                RETURN NULL;
            END $$""")
        op.execute("CREATE TRIGGER tokens_changed AFTER INSERT OR UPDATE OR DELETE ON "
                   "tokens FOR EACH STATEMENT EXECUTE FUNCTION passthru_tokens_changed()")
        return
    for operation in _OPERATIONS:
        # SQLite triggers are per row, and take no upsert.
        op.execute(f"""
            CREATE TRIGGER tokens_{operation} AFTER {operation.upper()} ON tokens
            BEGIN
                INSERT OR IGNORE INTO topics (name, version) VALUES ('tokens', 0);
                UPDATE topics SET version = version + 1 WHERE name = 'tokens';
            END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tokens_changed ON tokens")
        op.execute("DROP FUNCTION passthru_tokens_changed()")
        return
    for operation in _OPERATIONS:
        op.execute(f"DROP TRIGGER tokens_{operation}")
