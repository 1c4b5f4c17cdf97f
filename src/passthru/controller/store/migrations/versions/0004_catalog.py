"""An image's virtual size in bytes needs 64 bits: a 2 GiB disk overflows PostgreSQL's
32-bit integer.

Revision ID: 0004_catalog
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_catalog"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.alter_column("virtual_size", type_=sa.BigInteger(), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.alter_column("virtual_size", type_=sa.Integer(), existing_nullable=True)
