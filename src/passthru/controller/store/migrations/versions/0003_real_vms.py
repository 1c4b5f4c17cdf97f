"""Real VMs: image files, keypairs, host capacity and usage, pinned CPUs, and the
server's size, cloud-init, power task, reschedule attempts, NUMA node and console.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("resources", _JSON, nullable=True))
        for name in ("vcpus_capacity", "ram_mb_capacity", "disk_gb_capacity"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        for name in ("vcpus_used", "ram_mb_used", "disk_gb_used"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False,
                                       server_default="0"))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("disk_format", sa.String(16), nullable=True))
        batch.add_column(sa.Column("status", sa.String(32), nullable=False,
                                   server_default="active"))
        batch.add_column(sa.Column("virtual_size", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("files", _JSON, nullable=False, server_default="[]"))
    op.create_table(
        "keypairs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_keypairs"),
        sa.UniqueConstraint("project", "name", name="uq_keypairs_project_name"),
    )
    op.create_index("ix_keypairs_project", "keypairs", ["project"])
    with op.batch_alter_table("servers") as batch:
        for name, default in (("vcpus", "1"), ("ram_mb", "512"), ("disk_gb", "0"),
                              ("attempts", "0")):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False,
                                       server_default=default))
        batch.add_column(sa.Column("key_name", sa.String(255), nullable=True))
        batch.add_column(sa.Column("user_data", sa.Text(), nullable=True))
        batch.add_column(sa.Column("task_state", sa.String(32), nullable=True))
        batch.add_column(sa.Column("tried_hosts", _JSON, nullable=False,
                                   server_default="[]"))
        batch.add_column(sa.Column("numa_node", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pinned_cpus", _JSON, nullable=False,
                                   server_default="[]"))
        batch.add_column(sa.Column("console_log", sa.Text(), nullable=True))
    op.create_table(
        "cpu_pins",
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("cpu", sa.Integer(), nullable=False),
        sa.Column("server_uuid", sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE",
                                name="fk_cpu_pins_host_id_hosts"),
        sa.ForeignKeyConstraint(["server_uuid"], ["servers.uuid"], ondelete="CASCADE",
                                name="fk_cpu_pins_server_uuid_servers"),
        sa.PrimaryKeyConstraint("host_id", "cpu", name="pk_cpu_pins"),
    )
    op.create_index("ix_cpu_pins_server_uuid", "cpu_pins", ["server_uuid"])


def downgrade() -> None:
    op.drop_index("ix_cpu_pins_server_uuid", "cpu_pins")
    op.drop_table("cpu_pins")
    with op.batch_alter_table("servers") as batch:
        for name in ("vcpus", "ram_mb", "disk_gb", "attempts", "key_name", "user_data",
                     "task_state", "tried_hosts", "numa_node", "pinned_cpus", "console_log"):
            batch.drop_column(name)
    op.drop_index("ix_keypairs_project", "keypairs")
    op.drop_table("keypairs")
    with op.batch_alter_table("images") as batch:
        for name in ("disk_format", "status", "virtual_size", "files"):
            batch.drop_column(name)
    with op.batch_alter_table("hosts") as batch:
        for name in ("resources", "vcpus_capacity", "ram_mb_capacity", "disk_gb_capacity",
                     "vcpus_used", "ram_mb_used", "disk_gb_used"):
            batch.drop_column(name)
