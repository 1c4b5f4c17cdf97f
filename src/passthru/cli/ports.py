"""`passthru port-*`: ports on networks, to boot with --nic port-id=."""

from __future__ import annotations

from typing import Annotated

import typer

from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, out, print_record, print_table, show
from passthru.client import Client
from passthru.pci.binding import VnicType

_COLUMNS = ("id", "name", "network_id", "binding:vnic_type", "pci_flavor", "mac_address",
            "device_id", "binding:host_id", "binding:vif_type")
_HEADERS = ("ID", "Name", "Network", "Vnic type", "PCI flavor", "MAC", "Server", "Host",
            "VIF type")


@command("port-create")
def create(
    network: Annotated[str, typer.Argument(metavar="NET", help="Network name or ID.")],
    vnic_type: Annotated[VnicType, typer.Option(
        "--vnic-type", help="direct: a VF; macvtap: macvtap over a VF; direct-physical: a "
                            "whole PF; normal: no PCI device.")] = VnicType.NORMAL,
    pci_flavor: Annotated[str | None, typer.Option(
        "--pci-flavor", help="Only devices of this PCI flavor (the seed's plan A).")] = None,
    name: Annotated[str, typer.Option("--name")] = "",
    mac: Annotated[str | None, typer.Option(
        "--mac", show_default="a random one",
        help="A unicast MAC (first octet even), e.g. fa:16:3e:12:34:56.")] = None,
    port_security: Annotated[bool, typer.Option(
        "--port-security/--no-port-security",
        help="Off lets the guest send from other MACs (VF spoof check off).")] = True,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """Create a port on NET for this project."""
    body = {"port": {"network_id": network, "binding:vnic_type": vnic_type,
                     "pci_flavor": pci_flavor, "name": name, "mac_address": mac,
                     "port_security_enabled": port_security}}
    with Client(url, token) as api:
        port = api.call("POST", api.tenant("/ports"), json=body)["port"]
    show(port, as_json, lambda: print_record(port, title=f"Port {port['id']}"))


@command("port-list")
def list_ports(
    all_projects: Annotated[bool, typer.Option("--all-projects", help="(admin)")] = False,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """List this project's ports."""
    with Client(url, token) as api:
        ports = api.list_all(api.tenant("/ports"), "ports", {"all_projects": all_projects})
    show(ports, as_json, lambda: print_table(ports, _COLUMNS, headers=_HEADERS, title="Ports"))


@command("port-show")
def show_port(ref: Annotated[str, typer.Argument(metavar="ID|NAME")],
              url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Show a port with its binding."""
    with Client(url, token) as api:
        port = api.call("GET", api.tenant(f"/ports/{ref}"))["port"]
    show(port, as_json, lambda: print_record(port, title=f"Port {port['id']}"))


@command("port-delete")
def delete(ref: Annotated[str, typer.Argument(metavar="ID|NAME")],
           url: Url = None, token: Token = None) -> None:
    """Delete a port; refused while a server uses it."""
    with Client(url, token) as api:
        api.call("DELETE", api.tenant(f"/ports/{ref}"))
    out.print(f"deleted port {ref}", highlight=False)
