"""`passthru net-*`: provider networks for SR-IOV ports."""

from __future__ import annotations

from typing import Annotated

import typer

from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, out, print_record, print_table, show
from passthru.client import Client
from passthru.pci.binding import NetworkType

_COLUMNS = ("name", "network_type", "physical_network", "segmentation_id", "project", "ports",
            "id")
_HEADERS = ("Name", "Type", "Physical network", "VLAN", "Project", "Ports", "ID")


@command("net-create")
def create(
    name: Annotated[str, typer.Argument(help="e.g. prod")],
    physical_network: Annotated[str, typer.Option(
        "--physical-network", help="The physical network the hosts' devices are tagged with "
                                   "(e.physical_network in pci_information).")],
    network_type: Annotated[NetworkType | None, typer.Option(
        "--network-type", show_default="vlan with --segmentation-id, else flat")] = None,
    segmentation_id: Annotated[int | None, typer.Option(
        "--segmentation-id", min=1, max=4094, help="The VLAN id.")] = None,
    project: Annotated[str | None, typer.Option(
        "--project", show_default="shared by every project",
        help="Only this project may use the network.")] = None,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Create a provider network for SR-IOV ports.

    Ports on it with vnic type direct, macvtap or direct-physical get a device tagged
    with its physical network."""
    body = {"network": {"name": name, "physical_network": physical_network,
                        "network_type": network_type, "segmentation_id": segmentation_id,
                        "project": project}}
    with Client(url, token) as api:
        network = api.call("POST", api.tenant("/networks"), json=body)["network"]
    show(network, as_json, lambda: print_record(network, title=f"Network {name}"))


@command("net-list")
def list_networks(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """List the networks this project can use."""
    with Client(url, token) as api:
        networks = api.list_all(api.tenant("/networks"), "networks")
    show(networks, as_json, lambda: print_table(networks, _COLUMNS, headers=_HEADERS,
                                                title="Networks"))


@command("net-show")
def show_network(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
                 url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Show a network."""
    with Client(url, token) as api:
        network = api.call("GET", api.tenant(f"/networks/{ref}"))["network"]
    show(network, as_json, lambda: print_record(network, title=f"Network {network['name']}"))


@command("net-delete")
def delete(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
           url: Url = None, token: Token = None) -> None:
    """(admin) Delete a network; refused while it has ports."""
    with Client(url, token) as api:
        api.call("DELETE", api.tenant(f"/networks/{ref}"))
    out.print(f"deleted network {ref}", highlight=False)
