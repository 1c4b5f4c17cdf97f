"""The device ledger: indexes on (host_id, parent_addr, status) and (owner, host_id), so
that a claim or a free reads a device's PF/VF family, and what an owner holds on one
host, without reading the whole host.

Revision ID: 0006_ledger
Revises: 0005_hardening
"""

from __future__ import annotations

from alembic import op

revision = "0006_ledger"
down_revision = "0005_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_devices_host_parent", "devices", ["host_id", "parent_addr", "status"])
    op.create_index("ix_devices_owner_host", "devices", ["owner", "host_id"])


def downgrade() -> None:
    op.drop_index("ix_devices_owner_host", table_name="devices")
    op.drop_index("ix_devices_host_parent", table_name="devices")
