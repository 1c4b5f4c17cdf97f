"""`passthru discover`: what this host would offer, device by device, and why."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from passthru.cli.app import commands, panel_of
from passthru.cli.output import fail
from passthru.errors import PassthruError

if TYPE_CHECKING:  # the host side (libvirt, netlink) and pools load when discover runs
    from passthru.host.config import HostConfig
    from passthru.pci.pool import Pool
    from passthru.pci.resources import HostResources
    from passthru.pci.spec import Decision

#: What the controller tracks about a device's use: meaningless before it is reported.
_TRACKED = ("tags", "status", "owner", "request_id", "missing", "taint")


def _device_json(decision: Decision) -> dict[str, Any]:
    device = {k: v for k, v in asdict(decision.device).items() if k not in _TRACKED}
    return {**device, "taken": decision.taken, "entry": decision.entry,
            "tags": decision.tags, "reason": decision.reason}


def _pool_json(pool: Pool) -> dict[str, Any]:
    from passthru.pci.pool import pool_summary

    return {**pool_summary(pool), "devices": [device.address for device in pool.devices]}


def _where(config: HostConfig) -> str:
    return str(config.sysfs_root) if config.source == "sysfs" else config.libvirt_uri


def _devices_table(decisions: list[Decision]) -> Table:
    table = Table(title="Devices", title_justify="left", header_style="bold")
    for column in ("Address", "Type", "Ids", "Name", "Driver", "NUMA", "IOMMU", "Netdev",
                   "PF", "Offered", "Tags or reason"):
        if column == "Name":  # long pci.ids names would crowd out the columns that decide
            table.add_column(column, max_width=28, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(column, overflow="fold")
    for decision in decisions:
        d = decision.device
        tags = ", ".join(f"{k}={v}" for k, v in decision.tags.items())
        table.add_row(
            d.address,
            d.dev_type.removeprefix("type-"),
            f"{d.vendor_id}:{d.product_id}",
            d.product_name or "",
            d.driver or "",
            "-" if d.numa_node is None else str(d.numa_node),
            "-" if d.iommu_group is None else str(d.iommu_group),
            d.netdev or "",
            d.parent_addr or "",
            f"[green]yes[/] (entry {decision.entry})" if decision.taken else "[dim]no[/]",
            tags or ("" if decision.taken else f"[dim]{decision.reason}[/]"),
        )
    return table


def _pools_table(pools: list[Pool]) -> Table:
    table = Table(title="Pools", title_justify="left", header_style="bold")
    for column in ("Attributes", "Type", "NUMA", "PF", "Devices"):
        table.add_column(column, overflow="fold")
    for pool in pools:
        table.add_row(
            ", ".join(f"{k}={v}" for k, v in pool.attrs.items()),
            pool.dev_type.removeprefix("type-"),
            "-" if pool.numa_node is None else str(pool.numa_node),
            pool.parent_addr or "",
            str(pool.count),
        )
    return table


def _resources_json(found: HostResources | None) -> dict[str, Any] | None:
    if found is None:
        return None
    capacity = found.capacity()
    return {**asdict(found), "capacity": {
        "vcpus": capacity.vcpus, "ram_mb": capacity.ram_mb, "disk_gb": capacity.disk_gb,
        "pinnable": {str(node): list(cpus) for node, cpus in capacity.pinnable.items()}}}


def _resources_table(found: HostResources, config: HostConfig) -> Table:
    from passthru.host.topology import format_cpulist

    capacity = found.capacity()
    table = Table(title=f"Resources (disk: {config.instances_path})", title_justify="left",
                  header_style="bold")
    for column in ("NUMA node", "Socket", "CPUs", "Pinnable", "Memory MiB", "Hugepages"):
        table.add_column(column, overflow="fold")
    socket_of = found.socket_of()
    for node in found.numa:
        cpus = [cpu.id for cpu in found.cpus if cpu.node == node.id]
        pages = ", ".join(f"{count} x {size // 1024} MiB"
                          for size, count in node.hugepages.items() if count)
        table.add_row(str(node.id), str(socket_of.get(node.id, "-")), format_cpulist(cpus),
                      format_cpulist(list(capacity.pinnable_on(node.id))) or "-",
                      str(node.memory_mb), pages or "-")
    return table


def _capacity_line(found: HostResources) -> str:
    from passthru.host.topology import format_cpulist

    capacity = found.capacity()
    reserved = format_cpulist(list(found.reserved_cpus)) or "none"
    return (
        f"[bold]capacity[/]: {capacity.vcpus} vCPUs ({len(found.cpus)} CPUs, reserved {reserved}, "
        f"x{found.cpu_allocation_ratio:g}), {capacity.ram_mb} MiB memory ({found.memory_mb} "
        f"less {found.reserved_host_memory_mb} reserved, x{found.ram_allocation_ratio:g}), "
        f"{capacity.disk_gb} GB disk ({found.disk_gb} less {found.reserved_host_disk_gb} "
        f"reserved, x{found.disk_allocation_ratio:g})")


DISCOVER_HELP = (
    "Show what this host would offer for passthrough, without contacting the controller."
    "\n\n"
    "Reads the host's PCI devices from the configured source, applies the pci_information "
    "whitelist and groups the offered devices into pools by pool_attrs, exactly as "
    "`passthru agent` would. Every device is listed with its properties; an offered device "
    "shows the whitelist entry that took it and its tags, any other device the reason it "
    "was left out: no entry matched, the entry whose exclude list names it, or the host "
    "keeps it (the controller of a mounted disk, the NIC of a route or an address in use), "
    "or the host has no IOMMU, which the line above the devices says (allow_no_iommu = "
    "true in the host config offers devices anyway). Then the "
    "host's CPUs, NUMA nodes and disk, and the capacity the controller will count VMs "
    "against (after cpu/ram/disk_allocation_ratio and the reserved_* settings)."
    "\n\n"
    "Exit status: 0 when read, 2 for a bad host config (the message quotes the file, key "
    "and entry), 8 when the devices cannot be read."
    "\n\n"
    "Try it without the hardware:\n\n"
    "    passthru sim mixed --root /tmp/mixed > host.toml\n"
    "    passthru discover --config host.toml"
)


@commands.command("discover", rich_help_panel=panel_of("discover"), help=DISCOVER_HELP)
def discover(
    config_path: Annotated[Path, typer.Option(
        "--config", "-c", metavar="FILE",
        help="The host config (TOML) the agent would use: source, sysfs_root or "
             "libvirt_uri, pool_attrs and the pci_information whitelist.",
    )],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON document (host, devices, pools) for scripts.",
    )] = False,
) -> None:
    """Show what this host would offer for passthrough, without contacting the controller."""
    from passthru.host.config import decide, load_host_config, resources
    from passthru.pci.pool import build_pools

    try:
        config = load_host_config(config_path)
        preflight, decisions = decide(config)
        found = resources(config)
    except PassthruError as error:
        fail(error)
    pools = build_pools([d.device for d in decisions if d.taken], config.pool_attrs)
    if as_json:
        document = {
            "host": config.host,
            "source": config.source,
            "location": _where(config),
            "pool_attrs": list(config.pool_attrs),
            "iommu": preflight.iommu,
            "allow_no_iommu": preflight.allow_no_iommu,
            "kept_by_host": dict(preflight.kept),
            "devices": [_device_json(decision) for decision in decisions],
            "pools": [_pool_json(pool) for pool in pools],
            "resources": _resources_json(found),
        }
        typer.echo(json.dumps(document, indent=2))
        return
    out = Console()
    offered = sum(decision.taken for decision in decisions)
    out.print(f"[bold]{config.host}[/]: {len(decisions)} PCI devices from {config.source} "
              f"{_where(config)}; {offered} offered in {len(pools)} pools", highlight=False)
    out.print(preflight.iommu_line(), style=None if preflight.iommu else "yellow",
              highlight=False)
    out.print(_devices_table(decisions))
    out.print(_pools_table(pools))
    if found is None:
        out.print(f"[dim]no CPU topology under {config.sysfs_root}/devices/system: the "
                  "controller will not count VMs' vCPUs, memory and disk on this host[/]")
    else:
        out.print(_resources_table(found, config))
        out.print(_capacity_line(found), highlight=False)
