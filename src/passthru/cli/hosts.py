"""`passthru host-list`, `pci-device-list`, `pci-device-set`, `pci-stats`: the fleet, for
admins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, out, print_table, show
from passthru.client import Client
from passthru.errors import InvalidInputError
from passthru.pci.device import DeviceStatus

HostFilter = Annotated[str | None, typer.Option("--host", help="Only this host.")]


def ago(timestamp: str | None, now: datetime | None = None) -> str:
    """How long ago an API timestamp was, as a person reads it ('4 s ago', '2 h ago')."""
    if timestamp is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - datetime.fromisoformat(timestamp)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{max(0, int(seconds))} s ago"


@command("host-list")
def host_list(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """(admin) List hosts: up or down, last heart-beat, devices and how many are free,
    and the vCPUs, memory (MiB) and disk (GB) VMs use of each host's capacity."""
    with Client(url, token) as api:
        hosts = api.list_all(api.tenant("/os-hosts"), "hosts")
    rows = [{**h, "heartbeat": ago(h["last_heartbeat"]),
             "pool_attrs": ", ".join(h["pool_attrs"]),
             **{what: _of(h.get(f"{what}_used", 0), h.get(f"{what}_capacity"))
                for what in ("vcpus", "ram_mb", "disk_gb")}} for h in hosts]
    show(hosts, as_json, lambda: print_table(
        rows, ("name", "status", "heartbeat", "devices", "free", "vcpus", "ram_mb", "disk_gb",
               "pool_attrs"),
        headers=("Host", "Status", "Last heart-beat", "Devices", "Free", "vCPUs", "MiB", "GB",
                 "Pool attrs"),
        title="Hosts"))


def _of(used: int, capacity: int | None) -> str:
    """'used/capacity'; 'used/-' on a host that reports no resources (not counted)."""
    return f"{used}/{capacity}" if capacity is not None else f"{used}/-"


@command("pci-device-list")
def device_list(
    host: HostFilter = None,
    status: Annotated[DeviceStatus | None, typer.Option("--status")] = None,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) List PCI devices with their status, owner and taint."""
    params: dict[str, Any] = {"host": host, "status": status}
    with Client(url, token) as api:
        devices = api.list_all(api.tenant("/os-pci-devices"), "pci_devices",
                               {k: v for k, v in params.items() if v})
    rows = [{**entry["device"], "host": entry["host"],
             "ids": f"{entry['device']['vendor_id']}:{entry['device']['product_id']}"}
            for entry in devices]
    show(devices, as_json, lambda: print_table(
        rows, ("host", "address", "dev_type", "ids", "numa_node", "parent_addr", "tags",
               "status", "owner", "taint"),
        headers=("Host", "Address", "Type", "Ids", "NUMA", "PF", "Tags", "Status", "Server",
                 "Taint"),
        title="PCI devices"))


@command("pci-device-set")
def device_set(
    host: Annotated[str, typer.Argument(help="The device's host.")],
    address: Annotated[str, typer.Argument(help="The device's PCI address, DDDD:BB:SS.F.")],
    taint: Annotated[str | None, typer.Option(
        "--taint", metavar="REASON", help="Give it to no new VM, for this reason.")] = None,
    clear: Annotated[bool, typer.Option(
        "--clear", help="Clear its taint, whatever set it (an operator, another card "
                        "reported at its address, a one-time-use device's first use).")
    ] = False,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Taint a PCI device (no new VM is given it) or clear its taint.

    A VM that holds the device keeps it, and frees it as ever; the device then waits for
    its taint to be cleared."""
    if (taint is None) == (not clear):
        raise InvalidInputError("give either --taint REASON or --clear")
    with Client(url, token) as api:
        path = api.tenant(f"/os-pci-devices/{host}/{address}/taint")
        entry = (api.call("PUT", path, json={"taint": {"reason": taint}}) if taint is not None
                 else api.call("DELETE", path))["pci_device"]
    device = entry["device"]
    show(entry, as_json, lambda: out.print(
        f"device {device['address']} of host {host}: "
        + (f"tainted ({device['taint']})" if device["taint"] else "not tainted"),
        highlight=False))


@command("pci-stats")
def pci_stats(host: HostFilter = None, url: Url = None, token: Token = None,
              as_json: Json = False) -> None:
    """(admin) PCI stats: each host's pools with their attributes, free and used counts."""
    with Client(url, token) as api:
        stats = api.list_all(api.tenant("/os-pci-stats"), "pci_stats",
                             {"host": host} if host else None)
    show(stats, as_json, lambda: print_table(
        stats, ("host", "attrs", "dev_type", "numa_node", "parent_addr", "count", "free",
                "used"),
        headers=("Host", "Pool attrs", "Type", "NUMA", "PF", "Count", "Free", "Used"),
        title="PCI stats"))
