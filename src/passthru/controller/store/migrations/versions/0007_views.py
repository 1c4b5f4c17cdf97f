"""Views: indexes that let a page of servers, ports and events be an index range scan in
the lists' order (`api.paging`), with or without a project.

Revision ID: 0007_views
Revises: 0006_ledger
"""

from __future__ import annotations

from alembic import op

revision = "0007_views"
down_revision = "0006_ledger"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_servers_project_page", "servers", ["project", "created_at", "uuid"]),
    ("ix_servers_page", "servers", ["created_at", "uuid"]),
    ("ix_ports_project_page", "ports", ["project", "created_at", "id"]),
    ("ix_ports_page", "ports", ["created_at", "id"]),
    ("ix_events_page", "events", ["time", "id"]),
)


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
