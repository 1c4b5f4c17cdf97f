"""Initial schema: hosts, pools, devices, PCI flavors, flavors, images, networks, ports,
servers with their PCI requests, tokens and events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the types the models used when this revision was written.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)
DEV_TYPE = ("type-PCI", "type-PF", "type-VF")


def enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=32)


def fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    referred = target.split(".")[0]
    return sa.ForeignKeyConstraint([column], [target], ondelete=ondelete,
                                   name=op.f(f"fk_{table}_{column}_{referred}"))


def pk(table: str, *columns: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*columns, name=op.f(f"pk_{table}"))


def unique(table: str, *columns: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*columns, name=op.f(f"uq_{table}_{'_'.join(columns)}"))


def index(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column])


def key_value_table(table: str, owner_column: str, owner_target: str) -> None:
    op.create_table(
        table,
        sa.Column(owner_column, sa.String(36), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        fk(table, owner_column, owner_target, "CASCADE"),
        pk(table, owner_column, "key"),
    )


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", TIME, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("device_address", sa.String(16), nullable=True),
        sa.Column("server", sa.String(36), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        pk("events", "id"),
    )
    index("events", "host", "kind", "server", "time")

    op.create_table(
        "flavors",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.Integer(), nullable=False),
        sa.Column("disk_gb", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        pk("flavors", "id"),
        unique("flavors", "name"),
    )
    key_value_table("flavor_extra_specs", "flavor_id", "flavors.id")

    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", enum("hoststatus", "up", "down"), nullable=False),
        sa.Column("last_heartbeat", TIME, nullable=True),
        sa.Column("pool_attrs", JSON, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        pk("hosts", "id"),
        unique("hosts", "name"),
    )

    op.create_table(
        "images",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        pk("images", "id"),
        unique("images", "name"),
    )
    key_value_table("image_properties", "image_id", "images.id")

    op.create_table(
        "networks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("network_type", enum("networktype", "vlan", "flat"), nullable=False),
        sa.Column("physical_network", sa.String(255), nullable=False),
        sa.Column("segmentation_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        pk("networks", "id"),
        unique("networks", "name"),
    )
    index("networks", "project")

    op.create_table(
        "pci_flavors",
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        pk("pci_flavors", "uuid"),
        unique("pci_flavors", "name"),
    )
    key_value_table("pci_flavor_specs", "flavor_uuid", "pci_flavors.uuid")

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("role", enum("role", "admin", "member", "agent"), nullable=False),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        pk("tokens", "id"),
        unique("tokens", "digest"),
    )

    op.create_table(
        "pools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("attrs", JSON, nullable=False),
        sa.Column("dev_type", enum("devtype", *DEV_TYPE), nullable=False),
        sa.Column("numa_node", sa.Integer(), nullable=True),
        sa.Column("parent_addr", sa.String(16), nullable=True),
        fk("pools", "host_id", "hosts.id", "CASCADE"),
        pk("pools", "id"),
        unique("pools", "host_id", "key"),
    )
    index("pools", "host_id")

    op.create_table(
        "servers",
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255), nullable=False),
        sa.Column("flavor_id", sa.String(36), nullable=True),
        sa.Column("image_id", sa.String(36), nullable=True),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("status", enum("serverstatus", "BUILD", "ACTIVE", "ERROR", "DELETED"),
                  nullable=False),
        sa.Column("fault", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        fk("servers", "flavor_id", "flavors.id", "SET NULL"),
        fk("servers", "host_id", "hosts.id", "SET NULL"),
        fk("servers", "image_id", "images.id", "SET NULL"),
        pk("servers", "uuid"),
    )
    index("servers", "host_id", "name", "project", "status")

    op.create_table(
        "ports",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("network_id", sa.String(36), nullable=False),
        sa.Column("project", sa.String(255), nullable=False),
        sa.Column("mac_address", sa.String(17), nullable=False),
        sa.Column("vnic_type",
                  enum("vnictype", "normal", "direct", "macvtap", "direct-physical"),
                  nullable=False),
        sa.Column("pci_flavor", sa.String(255), nullable=True),
        sa.Column("port_security", sa.Boolean(), nullable=False),
        sa.Column("binding_host_id", sa.String(255), nullable=True),
        sa.Column("binding_vif_type", sa.String(64), nullable=True),
        sa.Column("binding_profile", JSON, nullable=False),
        sa.Column("device_id", sa.String(36), nullable=True),
        sa.Column("created_by_boot", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        fk("ports", "device_id", "servers.uuid", "SET NULL"),
        fk("ports", "network_id", "networks.id", "RESTRICT"),
        pk("ports", "id"),
        unique("ports", "network_id", "mac_address"),
    )
    index("ports", "device_id", "network_id", "project")

    op.create_table(
        "server_pci_requests",
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("server_uuid", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("alternatives", JSON, nullable=False),
        sa.Column("source", enum("requestsource", "flavor", "port"), nullable=False),
        sa.Column("source_flavor", sa.String(255), nullable=True),
        sa.Column("port_id", sa.String(36), nullable=True),
        sa.Column("numa_policy",
                  enum("numapolicy", "required", "preferred", "legacy", "socket"),
                  nullable=False),
        sa.Column("physical_network", sa.String(255), nullable=True),
        sa.Column("dev_type", enum("devtype", *DEV_TYPE), nullable=True),
        sa.Column("soft", sa.Boolean(), nullable=False),
        fk("server_pci_requests", "port_id", "ports.id", "SET NULL"),
        fk("server_pci_requests", "server_uuid", "servers.uuid", "CASCADE"),
        pk("server_pci_requests", "uuid"),
    )
    index("server_pci_requests", "server_uuid")

    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(16), nullable=False),
        sa.Column("vendor_id", sa.String(4), nullable=False),
        sa.Column("product_id", sa.String(4), nullable=False),
        sa.Column("dev_type", enum("devtype", *DEV_TYPE), nullable=False),
        sa.Column("dev_class", sa.String(8), nullable=False),
        sa.Column("subsystem_vendor_id", sa.String(4), nullable=True),
        sa.Column("subsystem_device_id", sa.String(4), nullable=True),
        sa.Column("parent_addr", sa.String(16), nullable=True),
        sa.Column("numa_node", sa.Integer(), nullable=True),
        sa.Column("iommu_group", sa.Integer(), nullable=True),
        sa.Column("driver", sa.String(64), nullable=True),
        sa.Column("netdev", sa.String(64), nullable=True),
        sa.Column("vendor_name", sa.String(255), nullable=True),
        sa.Column("product_name", sa.String(255), nullable=True),
        sa.Column("sriov_totalvfs", sa.Integer(), nullable=True),
        sa.Column("sriov_numvfs", sa.Integer(), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("status",
                  enum("devicestatus", "available", "claimed", "allocated", "unavailable",
                       "removed"),
                  nullable=False),
        sa.Column("owner", sa.String(36), nullable=True),
        sa.Column("request_id", sa.String(36), nullable=True),
        sa.Column("missing", sa.Boolean(), nullable=False),
        fk("devices", "host_id", "hosts.id", "CASCADE"),
        fk("devices", "owner", "servers.uuid", "SET NULL"),
        fk("devices", "pool_id", "pools.id", "SET NULL"),
        fk("devices", "request_id", "server_pci_requests.uuid", "SET NULL"),
        pk("devices", "id"),
        unique("devices", "host_id", "address"),
    )
    index("devices", "host_id", "owner", "pool_id", "request_id", "status")


def downgrade() -> None:
    for table in ("devices", "server_pci_requests", "ports", "servers", "pools",
                  "pci_flavor_specs", "image_properties", "flavor_extra_specs", "tokens",
                  "pci_flavors", "networks", "images", "hosts", "flavors", "events"):
        op.drop_table(table)
