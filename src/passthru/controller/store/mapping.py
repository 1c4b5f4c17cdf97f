"""Rows ↔ the core's `PciDevice`, `Pool`, `PciRequest`, `HostResources`, `VmSize`, port
and network specs, the image and guest parts of a spawn order, and events as records:
the only place that converts between them."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

from pydantic import TypeAdapter

from passthru.controller.store.models import (
    DeviceRow,
    EventRow,
    ImageRow,
    PciRequestRow,
    PoolRow,
    PortRow,
    ServerRow,
)
from passthru.pci.binding import NetworkSpec, PortSpec, VnicType
from passthru.pci.device import PciDevice
from passthru.pci.pool import Pool, PoolKey
from passthru.pci.request import PciRequest
from passthru.pci.resources import CPU_POLICY_KEY, HostResources, VmSize, parse_cpu_policy
from passthru.pci.work import AttachedPort, GuestSpec, ImageFile, ImagePart, ImageRef

#: The image property holding a direct-kernel-boot image's kernel command line.
COMMAND_LINE_KEY = "os_command_line"
_RESOURCES = TypeAdapter(HostResources)

DEVICE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PciDevice))


def device_from_row(row: DeviceRow) -> PciDevice:
    values = {name: getattr(row, name) for name in DEVICE_FIELDS}
    values["tags"] = dict(row.tags or {})
    return PciDevice(**values)


_DEVICE_VALUES = operator.attrgetter(*DEVICE_FIELDS)
_TAGS = DEVICE_FIELDS.index("tags")


def device_values(device: PciDevice) -> tuple[Any, ...]:
    """A device's columns in `DEVICE_FIELDS` order, as Core statements write them (bulk
    writes of big reports); equal tuples mean an unchanged row."""
    values = list(_DEVICE_VALUES(device))
    values[_TAGS] = dict(values[_TAGS])
    return tuple(values)


def device_from_values(values: Sequence[Any]) -> PciDevice:
    """The core device of a row read with Core (a `select` of the `DEVICE_FIELDS`)."""
    device = PciDevice(*values)
    device.tags = dict(device.tags or {})
    return device


def pool_key_text(key: PoolKey) -> str:
    """A pool's identity as canonical JSON, unique per host."""
    return json.dumps([list(map(list, key.signature.attrs)), str(key.signature.dev_type),
                       key.numa_node, key.parent_addr], separators=(",", ":"))


def pool_record(host_id: int, pool: Pool) -> dict[str, Any]:
    """A new pool row's columns, as a Core insert writes them."""
    return {"host_id": host_id, "key": pool_key_text(pool.key), "attrs": dict(pool.attrs),
            "dev_type": pool.dev_type, "numa_node": pool.numa_node,
            "parent_addr": pool.parent_addr}


def pool_from_row(row: PoolRow, devices: Iterable[DeviceRow] | None = None) -> Pool:
    """The core pool of `row`, with `devices` (default: the row's own) as core devices."""
    members = row.devices if devices is None else devices
    return Pool(attrs=dict(row.attrs), dev_type=row.dev_type, numa_node=row.numa_node,
                parent_addr=row.parent_addr, devices=[device_from_row(d) for d in members])


def request_from_row(row: PciRequestRow) -> PciRequest:
    return PciRequest(count=row.count, alternatives=tuple(row.alternatives),
                      request_id=row.uuid, source=row.source, numa_policy=row.numa_policy,
                      physical_network=row.physical_network, dev_type=row.dev_type,
                      port_id=row.port_id, soft=row.soft)


def request_columns(request: PciRequest, position: int,
                    source_flavor: str | None = None) -> dict[str, Any]:
    """A request's row (but its server's uuid) as columns, for a plain insert."""
    return {"uuid": request.request_id, "position": position, "count": request.count,
            "alternatives": list(request.alternatives), "source": request.source,
            "source_flavor": source_flavor, "port_id": request.port_id,
            "numa_policy": request.numa_policy, "physical_network": request.physical_network,
            "dev_type": request.dev_type, "soft": request.soft}


def new_request_row(request: PciRequest, position: int,
                    source_flavor: str | None = None) -> PciRequestRow:
    return PciRequestRow(**request_columns(request, position, source_flavor))


def port_spec(port: PortRow) -> tuple[PortSpec, NetworkSpec]:
    network = port.network
    return (PortSpec(port.id, port.vnic_type, port.mac_address,
                     port_security=port.port_security),
            NetworkSpec(network.name, network.network_type, network.physical_network,
                        network.segmentation_id))


def attached_ports(ports: Iterable[PortRow]) -> list[AttachedPort]:
    """The normal ports among `ports` (those with devices go with their devices)."""
    return [AttachedPort(*port_spec(p)) for p in ports if p.vnic_type is VnicType.NORMAL]


def file_record(file: ImageFile) -> dict[str, Any]:
    """An image file as `ImageRow.files` stores it."""
    return {**asdict(file), "part": str(file.part)}


def image_files(row: ImageRow) -> list[ImageFile]:
    return [ImageFile(ImagePart(f["part"]), str(f["sha256"]), int(f["size"]))
            for f in row.files]


def image_ref(row: ImageRow) -> ImageRef:
    """The image as a host boots it; only for an image with a disk format."""
    assert row.disk_format is not None, f"image {row.name} is catalog-only"
    return ImageRef(row.id, row.name, row.disk_format, image_files(row),
                    row.properties.get(COMMAND_LINE_KEY))


def hostname_of(name: str, uuid: str) -> str:
    """The server's name as a host name (an RFC 1123 label: a-z, 0-9 and inner dashes, at
    most 63); a name with nothing usable gets one from the uuid."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].rstrip("-")
    return label or f"server-{uuid[:8]}"


def guest_spec(server: ServerRow, public_key: str | None) -> GuestSpec:
    """What a server boots; `public_key` is the one its key name names (None: none, or the
    keypair is gone)."""
    image = server.image
    key = server.key_name
    return GuestSpec(
        image=image_ref(image) if image is not None and image.disk_format else None,
        disk_gb=server.disk_gb,
        hostname=hostname_of(server.name, server.uuid),
        public_keys={key: public_key} if key is not None and public_key is not None else {},
        user_data=server.user_data)
def resources_json(resources: HostResources) -> dict[str, Any]:
    """`HostRow.resources`: the reported HostResources as plain JSON."""
    return dict(_RESOURCES.dump_python(resources, mode="json"))


def resources_from_json(stored: dict[str, Any] | None) -> HostResources | None:
    return _RESOURCES.validate_python(stored) if stored is not None else None


def server_size(server: ServerRow) -> VmSize:
    """What the server takes of its host: the sizes fixed at boot, its flavor's
    `hw:cpu_policy` (shared when the flavor is gone), and the physical networks of its
    normal ports, which its host must bridge."""
    return vm_size(server.vcpus, server.ram_mb, server.disk_gb,
                   server.flavor.extra_specs if server.flavor is not None else None,
                   server.ports)


def vm_size(vcpus: int, ram_mb: int, disk_gb: int, extra_specs: Mapping[str, str] | None,
            ports: Iterable[PortRow]) -> VmSize:
    """`server_size` of a server of these sizes, flavor extra specs and ports."""
    policy = parse_cpu_policy((extra_specs or {}).get(CPU_POLICY_KEY))
    networks = frozenset(port.network.physical_network for port in ports
                         if port.vnic_type is VnicType.NORMAL)
    return VmSize(vcpus, ram_mb, disk_gb, policy, networks)


def event_record(row: EventRow, server_name: str | None, project: str | None
                 ) -> dict[str, Any]:
    """An event as the API lists it and the events archive keeps it, with its server's
    name and project."""
    return {"id": row.id, "time": row.time, "kind": row.kind, "host": row.host,
            "device": row.device_address, "server": row.server, "server_name": server_name,
            "project": project, "message": row.message}
