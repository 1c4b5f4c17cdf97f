"""The controller's tables (SQLAlchemy 2 typed ORM).

Devices and pools are stored column for column as the core `PciDevice` and `Pool` hold
them; `controller.store.mapping` converts in one place. Every device row carries a `generation`
that the ORM bumps on each change and checks on each update, so a claim is a conditional
update that fails when anyone touched the device since it was read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from passthru.controller.enums import Role
from passthru.pci.binding import NetworkType, VnicType
from passthru.pci.device import MAX_TAINT, DeviceStatus, DevType
from passthru.pci.request import NumaPolicy, RequestSource


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> str:
    return str(uuid.uuid4())


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonType = JSON().with_variant(JSONB(), "postgresql")


def enum_column(enum: type[StrEnum]) -> Enum:
    """A StrEnum stored by value as a plain string, so that migrations stay portable."""
    return Enum(enum, native_enum=False, create_constraint=False, length=32,
                values_callable=lambda members: [m.value for m in members])


class HostStatus(StrEnum):
    UP = "up"
    DOWN = "down"


class ServerStatus(StrEnum):
    """Nova's server states: SHUTOFF is stopped with everything still held, REBOOT and
    HARD_REBOOT last until the host's agent answers."""

    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    REBOOT = "REBOOT"
    HARD_REBOOT = "HARD_REBOOT"
    ERROR = "ERROR"
    DELETED = "DELETED"


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    # Every row class here is mapped to a Table; SQLAlchemy types it as any FromClause,
    # which Core's insert/update/delete on `Row.__table__` would not accept.
    __table__: ClassVar[Table]

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JsonType}


class HostRow(Base):
    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[HostStatus] = mapped_column(enum_column(HostStatus), default=HostStatus.UP)
    last_heartbeat: Mapped[datetime | None]
    pool_attrs: Mapped[list[str]] = mapped_column(JsonType, default=list)
    #: Bumped by every inventory change (not by heart-beats): a delta report names the
    #: generation it builds on and is refused if the store has moved on.
    generation: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The host's CPUs, NUMA memory, disk, ratios and reserves as last reported
    #: (`pci.resources.HostResources`); None for an agent that reports none.
    resources: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    #: Capacity after ratios and reserves (None: not counted), and what VMs hold of it;
    #: claims add to the `*_used` columns only while they stay within capacity.
    vcpus_capacity: Mapped[int | None]
    ram_mb_capacity: Mapped[int | None]
    disk_gb_capacity: Mapped[int | None]
    vcpus_used: Mapped[int] = mapped_column(default=0)
    ram_mb_used: Mapped[int] = mapped_column(default=0)
    disk_gb_used: Mapped[int] = mapped_column(default=0)

    pools: Mapped[list[PoolRow]] = relationship(back_populates="host",
                                                cascade="all, delete-orphan")
    devices: Mapped[list[DeviceRow]] = relationship(back_populates="host",
                                                    cascade="all, delete-orphan")


class PoolRow(Base):
    __tablename__ = "pools"
    __table_args__ = (UniqueConstraint("host_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    #: The pool's identity on its host (attrs, type, NUMA node, parent) as canonical JSON.
    key: Mapped[str] = mapped_column(Text)
    attrs: Mapped[dict[str, Any]]
    dev_type: Mapped[DevType] = mapped_column(enum_column(DevType))
    numa_node: Mapped[int | None]
    parent_addr: Mapped[str | None] = mapped_column(String(16))

    host: Mapped[HostRow] = relationship(back_populates="pools")
    devices: Mapped[list[DeviceRow]] = relationship(back_populates="pool")


class DeviceRow(Base):
    __tablename__ = "devices"
    # The ledger reads a device's PF/VF family (and a parent's VFs in use) through the
    # first, what an owner holds on one host through the second.
    __table_args__ = (UniqueConstraint("host_id", "address"),
                      Index("ix_devices_host_parent", "host_id", "parent_addr", "status"),
                      Index("ix_devices_owner_host", "owner", "host_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("pools.id", ondelete="SET NULL"), index=True)
    generation: Mapped[int] = mapped_column(default=1)

    address: Mapped[str] = mapped_column(String(16))
    vendor_id: Mapped[str] = mapped_column(String(4))
    product_id: Mapped[str] = mapped_column(String(4))
    dev_type: Mapped[DevType] = mapped_column(enum_column(DevType))
    dev_class: Mapped[str] = mapped_column(String(8), default="")
    subsystem_vendor_id: Mapped[str | None] = mapped_column(String(4))
    subsystem_device_id: Mapped[str | None] = mapped_column(String(4))
    parent_addr: Mapped[str | None] = mapped_column(String(16))
    numa_node: Mapped[int | None]
    iommu_group: Mapped[int | None]
    driver: Mapped[str | None] = mapped_column(String(64))
    netdev: Mapped[str | None] = mapped_column(String(64))
    vendor_name: Mapped[str | None] = mapped_column(String(255))
    product_name: Mapped[str | None] = mapped_column(String(255))
    sriov_totalvfs: Mapped[int | None]
    sriov_numvfs: Mapped[int | None]
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[DeviceStatus] = mapped_column(enum_column(DeviceStatus), index=True)
    owner: Mapped[str | None] = mapped_column(
        ForeignKey("servers.uuid", ondelete="SET NULL"), index=True)
    request_id: Mapped[str | None] = mapped_column(
        ForeignKey("server_pci_requests.uuid", ondelete="SET NULL"), index=True)
    missing: Mapped[bool] = mapped_column(default=False)
    taint: Mapped[str | None] = mapped_column(String(MAX_TAINT))

    host: Mapped[HostRow] = relationship(back_populates="devices")
    pool: Mapped[PoolRow | None] = relationship(back_populates="devices")
    request: Mapped[PciRequestRow | None] = relationship(back_populates="devices")

    __mapper_args__ = {"version_id_col": generation}


class KeyValue:
    """A key/value row of an owner: a PCI flavor's spec, a flavor's extra specs, an
    image's properties. Each owner keeps its own table, so that every row has a foreign key
    that cascades from its owner; the shape is declared once, here."""

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def as_dict(rows: Iterable[KeyValue]) -> dict[str, str]:
    return {row.key: row.value for row in rows}


class PciFlavorRow(Base):
    """The seed's pci_flavor table: a named set of key/value match expressions."""

    __tablename__ = "pci_flavors"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Key/value rows are always read with their owner: a list loads them in one query.
    specs: Mapped[list[PciFlavorSpecRow]] = relationship(lazy="selectin",
        cascade="all, delete-orphan", order_by="PciFlavorSpecRow.key")

    @property
    def spec(self) -> dict[str, str]:
        return as_dict(self.specs)


class PciFlavorSpecRow(KeyValue, Base):
    __tablename__ = "pci_flavor_specs"

    flavor_uuid: Mapped[str] = mapped_column(
        ForeignKey("pci_flavors.uuid", ondelete="CASCADE"), primary_key=True)


class FlavorRow(Base):
    __tablename__ = "flavors"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    vcpus: Mapped[int] = mapped_column(default=1)
    ram_mb: Mapped[int] = mapped_column(default=512)
    disk_gb: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    extra: Mapped[list[FlavorExtraSpecRow]] = relationship(lazy="selectin",
        cascade="all, delete-orphan", order_by="FlavorExtraSpecRow.key")

    @property
    def extra_specs(self) -> dict[str, str]:
        return as_dict(self.extra)


class FlavorExtraSpecRow(KeyValue, Base):
    __tablename__ = "flavor_extra_specs"

    flavor_id: Mapped[str] = mapped_column(
        ForeignKey("flavors.id", ondelete="CASCADE"), primary_key=True)


class ImageStatus(StrEnum):
    """Glance's image states: `queued` until its files are uploaded and checked."""

    QUEUED = "queued"
    ACTIVE = "active"


class ImageRow(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: `qcow2` or `raw`; None for a catalog-only image with no disk (properties alone).
    disk_format: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[ImageStatus] = mapped_column(enum_column(ImageStatus),
                                                default=ImageStatus.ACTIVE)
    #: Bytes the guest's disk has (64-bit: disks pass 2 GiB).
    virtual_size: Mapped[int | None] = mapped_column(BigInteger)
    #: The image's files as `pci.work.ImageFile`s: part, sha256 and size of each.
    files: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)

    props: Mapped[list[ImagePropertyRow]] = relationship(lazy="selectin",
        cascade="all, delete-orphan", order_by="ImagePropertyRow.key")

    @property
    def properties(self) -> dict[str, str]:
        return as_dict(self.props)


class ImagePropertyRow(KeyValue, Base):
    __tablename__ = "image_properties"

    image_id: Mapped[str] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)


class NetworkRow(Base):
    __tablename__ = "networks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    #: None: shared by every project.
    project: Mapped[str | None] = mapped_column(String(255), index=True)
    network_type: Mapped[NetworkType] = mapped_column(enum_column(NetworkType))
    physical_network: Mapped[str] = mapped_column(String(255))
    segmentation_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    ports: Mapped[list[PortRow]] = relationship(back_populates="network")


class PortRow(Base):
    __tablename__ = "ports"
    # Lists page through ports oldest first, in a project or across all (api.paging).
    __table_args__ = (UniqueConstraint("network_id", "mac_address"),
                      Index("ix_ports_project_page", "project", "created_at", "id"),
                      Index("ix_ports_page", "created_at", "id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), default="")
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="RESTRICT"), index=True)
    project: Mapped[str] = mapped_column(String(255), index=True)
    mac_address: Mapped[str] = mapped_column(String(17))
    vnic_type: Mapped[VnicType] = mapped_column(enum_column(VnicType))
    #: Plan A: the PCI flavor a tenant named for this port (None: any device on the network).
    pci_flavor: Mapped[str | None] = mapped_column(String(255))
    port_security: Mapped[bool] = mapped_column(Boolean, default=True)
    binding_host_id: Mapped[str | None] = mapped_column(String(255))
    binding_vif_type: Mapped[str | None] = mapped_column(String(64))
    binding_profile: Mapped[dict[str, Any]] = mapped_column(default=dict)
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("servers.uuid", ondelete="SET NULL"), index=True)
    #: True for ports a boot created from `--nic net-id=...`; they die with the server.
    created_by_boot: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    network: Mapped[NetworkRow] = relationship(back_populates="ports")


class KeypairRow(Base):
    """An SSH public key a project's servers can boot with (`boot --key-name`)."""

    __tablename__ = "keypairs"
    __table_args__ = (UniqueConstraint("project", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project: Mapped[str] = mapped_column(String(255), index=True)
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServerRow(Base):
    __tablename__ = "servers"
    # Lists page through servers oldest first, in a project or across all (api.paging).
    __table_args__ = (Index("ix_servers_project_page", "project", "created_at", "uuid"),
                      Index("ix_servers_page", "created_at", "uuid"))

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), index=True)
    project: Mapped[str] = mapped_column(String(255), index=True)
    flavor_id: Mapped[str | None] = mapped_column(
        ForeignKey("flavors.id", ondelete="SET NULL"))
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"),
                                                index=True)
    status: Mapped[ServerStatus] = mapped_column(enum_column(ServerStatus), index=True,
                                                 default=ServerStatus.BUILD)
    fault: Mapped[str | None] = mapped_column(Text)
    #: The libvirt domain XML the host's agent started the server with.
    domain_xml: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    #: What the server holds of its host besides devices, fixed at boot (the flavor may
    #: change or go): counted in the host's `*_used` columns while it is placed there.
    vcpus: Mapped[int] = mapped_column(default=1)
    ram_mb: Mapped[int] = mapped_column(default=512)
    disk_gb: Mapped[int] = mapped_column(default=0)
    key_name: Mapped[str | None] = mapped_column(String(255))
    user_data: Mapped[str | None] = mapped_column(Text)
    #: A power change asked of the host's agent and not yet answered
    #: (`pci.work.PowerAction`), None when there is none.
    task_state: Mapped[str | None] = mapped_column(String(32))
    #: Spawns tried so far and the hosts they failed on (for rescheduling elsewhere).
    attempts: Mapped[int] = mapped_column(default=0)
    tried_hosts: Mapped[list[str]] = mapped_column(JsonType, default=list)
    #: The NUMA node a NUMA-bound server was placed on, and its pinned host CPUs.
    numa_node: Mapped[int | None]
    pinned_cpus: Mapped[list[int]] = mapped_column(JsonType, default=list)
    #: The tail of the serial console log, as the host's agent last sent it.
    console_log: Mapped[str | None] = mapped_column(Text)

    flavor: Mapped[FlavorRow | None] = relationship()
    image: Mapped[ImageRow | None] = relationship()
    host: Mapped[HostRow | None] = relationship()
    requests: Mapped[list[PciRequestRow]] = relationship(
        back_populates="server", cascade="all, delete-orphan", order_by="PciRequestRow.position")
    ports: Mapped[list[PortRow]] = relationship()


class CpuPinRow(Base):
    """A host CPU owned by one dedicated-CPU server: the primary key makes a second
    owner impossible, so two claims racing for a CPU cannot both commit."""

    __tablename__ = "cpu_pins"

    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"),
                                         primary_key=True)
    cpu: Mapped[int] = mapped_column(primary_key=True)
    server_uuid: Mapped[str] = mapped_column(
        ForeignKey("servers.uuid", ondelete="CASCADE"), index=True)


class PciRequestRow(Base):
    """One of a server's PCI requests; `devices` are the ones allocated to it."""

    __tablename__ = "server_pci_requests"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    server_uuid: Mapped[str] = mapped_column(
        ForeignKey("servers.uuid", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    count: Mapped[int]
    alternatives: Mapped[list[str]] = mapped_column(JsonType, default=list)
    source: Mapped[RequestSource] = mapped_column(enum_column(RequestSource))
    #: The flavor whose extra spec asked, for requests of source `flavor`.
    source_flavor: Mapped[str | None] = mapped_column(String(255))
    port_id: Mapped[str | None] = mapped_column(ForeignKey("ports.id", ondelete="SET NULL"))
    numa_policy: Mapped[NumaPolicy] = mapped_column(enum_column(NumaPolicy))
    physical_network: Mapped[str | None] = mapped_column(String(255))
    dev_type: Mapped[DevType | None] = mapped_column(enum_column(DevType))
    soft: Mapped[bool] = mapped_column(Boolean, default=False)

    server: Mapped[ServerRow] = relationship(back_populates="requests")
    devices: Mapped[list[DeviceRow]] = relationship(back_populates="request")


class TokenRow(Base):
    """A bearer token, stored only as its SHA-256 digest."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(enum_column(Role))
    project: Mapped[str | None] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: What the token is for, as its issuer named it (shown by token-list).
    name: Mapped[str | None] = mapped_column(String(255))
    #: None: never expires.
    expires_at: Mapped[datetime | None] = mapped_column()


class AnswerRow(Base):
    """An agent's answer to an order, kept under the idempotency key it was sent with, so
    that a replay (the agent retrying after a lost reply) gets the first result back."""

    __tablename__ = "answers"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    server: Mapped[str] = mapped_column(String(36))
    #: Which answer: spawned, destroyed, powered, lost.
    kind: Mapped[str] = mapped_column(String(16))
    #: The answer's response body, returned as is to a replay.
    result: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class TopicRow(Base):
    """A version per piece of shared state that replicas cache (PCI flavors, tokens):
    bumped in the same transaction as each change, so a replica that reads another
    version than the one it cached knows to read the state again."""

    __tablename__ = "topics"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class EventRow(Base):
    """What happened to devices and hosts: claims, frees, removals, hosts going down."""

    __tablename__ = "events"
    # The event list pages newest first by (time, id) (api.paging).
    __table_args__ = (Index("ix_events_page", "time", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    host: Mapped[str | None] = mapped_column(String(255), index=True)
    device_address: Mapped[str | None] = mapped_column(String(16))
    server: Mapped[str | None] = mapped_column(String(36), index=True)
    message: Mapped[str] = mapped_column(Text, default="")
