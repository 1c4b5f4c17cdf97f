"""Device taints: why a device is given to no new VM until an operator clears it (an
operator's reason, another card reported at its address while in use, a one-time-use
device used once). NULL, the default, is untainted: every existing device stays as it was.

Revision ID: 0009_taints
Revises: 0008_reqpath
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_taints"
down_revision = "0008_reqpath"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ALTER TABLE ... ADD COLUMN on both engines: the table is not rebuilt.
    op.add_column("devices", sa.Column("taint", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as table:
        table.drop_column("taint")
