"""`passthru sim`: build a simulated host of real hardware, to try host configs on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from passthru.cli.app import commands, panel_of
from passthru.cli.output import fail
from passthru.errors import InvalidInputError, PassthruError

if TYPE_CHECKING:  # the simulator (lxml, the hardware catalogue) loads when sim runs
    from passthru.sim import HostProfile


def _shape(profile: HostProfile) -> dict[str, object]:
    from passthru.sim import expand

    functions = expand(profile)
    vfs = sum(1 for f in functions if f.physfn)
    pfs = sum(1 for f in functions if f.totalvfs is not None)
    return {"name": profile.name, "description": profile.description,
            "devices": len(functions), "pfs": pfs, "vfs": vfs}


def _list_profiles(as_json: bool) -> None:
    from passthru.sim import PROFILES

    shapes = [_shape(profile) for profile in PROFILES.values()]
    if as_json:
        typer.echo(json.dumps(shapes, indent=2))
        return
    table = Table(title="Simulated host profiles", title_justify="left", header_style="bold")
    for column in ("Profile", "Devices", "PFs", "VFs", "Hardware"):
        table.add_column(column, overflow="fold")
    for shape in shapes:
        table.add_row(*(str(shape[key]) for key in ("name", "devices", "pfs", "vfs",
                                                     "description")))
    Console().print(table)


SIM_HELP = (
    "Build a simulated host of real PCI hardware, to try host configs without it."
    "\n\n"
    "The host is written as a sysfs tree (--root) and/or as libvirt node-device XML "
    "(--nodedev-xml), exactly as the kernel and libvirt would show that hardware: Intel "
    "X710/E810 and Mellanox ConnectX NICs with their VFs, NVIDIA GPUs on two NUMA nodes, "
    "QuickAssist crypto cards, NVMe. A host config that fits it is printed on standard "
    "output (messages go to standard error), so"
    "\n\n"
    "    passthru sim x710-2x --root /tmp/x710 > host.toml\n"
    "    passthru discover --config host.toml"
    "\n\n"
    "shows what that host would offer, and `passthru agent --config host.toml` reports it "
    "to the controller."
)


@commands.command("sim", rich_help_panel=panel_of("sim"), help=SIM_HELP)
def sim(
    profile_name: Annotated[str | None, typer.Argument(
        metavar="PROFILE", show_default=False,
        help="The hardware profile to build (see --list), e.g. x710-2x, gpu-2numa, mixed.",
    )] = None,
    root: Annotated[Path | None, typer.Option(
        "--root", metavar="DIR",
        help="Write the host as a sysfs tree here (DIR/bus/pci/devices/...): use it as "
             "sysfs_root. DIR must be new, empty, or an earlier simulated host, which is "
             "replaced.",
    )] = None,
    nodedev_xml_path: Annotated[Path | None, typer.Option(
        "--nodedev-xml", metavar="FILE",
        help="Write the host as libvirt node-device XML here, for source = \"libvirt\" "
             "with libvirt_uri = \"test:///FILE\" (libvirt's test driver).",
    )] = None,
    list_profiles: Annotated[bool, typer.Option(
        "--list", help="List the profiles and exit.",
    )] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON for scripts: the profile list, or what was built with "
                       "its host config.",
    )] = False,
) -> None:
    """Build a simulated host of real PCI hardware, to try host configs without it."""
    from passthru.sim import build_sysfs, host_config_toml, nodedev_xml

    if list_profiles:
        _list_profiles(as_json)
        return
    err = Console(stderr=True)
    try:
        profile = _chosen(profile_name)
        if root is None and nodedev_xml_path is None:
            raise InvalidInputError("say where to build the host: --root DIR (a sysfs tree) "
                                    "and/or --nodedev-xml FILE (libvirt node XML)")
        if root is not None:
            build_sysfs(profile, root)
            err.print(f"built {profile.name} as a sysfs tree in {root}", highlight=False)
        if nodedev_xml_path is not None:
            nodedev_xml_path.write_text(nodedev_xml(profile))
            err.print(f"wrote {profile.name} as libvirt node XML to {nodedev_xml_path}",
                      highlight=False)
    except (PassthruError, OSError) as error:
        fail(error)
    config = host_config_toml(profile, sysfs_root=root, nodedev_xml=nodedev_xml_path)
    if as_json:
        typer.echo(json.dumps({
            **_shape(profile),
            "sysfs_root": str(root.resolve()) if root else None,
            "nodedev_xml": str(nodedev_xml_path.resolve()) if nodedev_xml_path else None,
            "host_config": config,
        }, indent=2))
    else:
        typer.echo(config, nl=False)


def _chosen(name: str | None) -> HostProfile:
    from passthru.pci.match import did_you_mean
    from passthru.sim import PROFILES

    if name is None:
        raise InvalidInputError("name a profile to build; `passthru sim --list` shows them")
    if name not in PROFILES:
        raise InvalidInputError(f"no profile {name!r} ({did_you_mean(name, PROFILES)}); "
                                "`passthru sim --list` shows them")
    return PROFILES[name]
