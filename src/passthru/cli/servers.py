"""`passthru boot`, `list`, `show`, `delete`, `stop`, `start`, `reboot`, `console-log`:
servers and the devices they hold."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from passthru.cli.files import read_text
from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, out, print_record, print_table, show
from passthru.client import Client
from passthru.errors import ConflictError, NoCapacityError

_COLUMNS = ("id", "name", "status", "host", "flavor", "image", "devices")
_HEADERS = ("ID", "Name", "Status", "Host", "Flavor", "Image", "PCI devices")


def _devices(server: dict[str, Any]) -> list[str]:
    return [d["address"] for r in server["pci_requests"] for d in r["devices"]]


def _requests_table(server: dict[str, Any]) -> Table:
    table = Table(title="PCI requests", title_justify="left", header_style="bold")
    for header in ("Request", "Count", "PCI flavor", "Physical network", "Type", "From",
                   "Devices"):
        table.add_column(header, overflow="fold")
    for entry in server["pci_requests"]:
        request = entry["request"]
        # Short ids keep the table readable; --json has them whole.
        source = entry["source_flavor"] or f"port {request['port_id'][:8]}"
        devices = ", ".join(f"{d['address']} ({d['vendor_id']}:{d['product_id']})"
                            for d in entry["devices"]) or "-"
        table.add_row(request["request_id"][:8], str(request["count"]),
                      " or ".join(request["alternatives"]) or "any",
                      request["physical_network"] or "-", request["dev_type"] or "-",
                      source, devices)
    return table


@command("boot")
def boot(
    name: Annotated[str, typer.Argument(help="The server's name.")],
    flavor: Annotated[str, typer.Option("--flavor", help="Flavor name or ID.")],
    image: Annotated[str | None, typer.Option("--image", help="Image name or ID.")] = None,
    nics: Annotated[list[str] | None, typer.Option(
        "--nic", metavar="net-id=N[,vnic-type=T][,pci-flavor=F] | port-id=P",
        help="Repeatable. A new port on network N (vnic-type direct, macvtap or "
             "direct-physical gets a device on N's physical network; pci-flavor narrows "
             "it), or an existing port P.")] = None,
    min_count: Annotated[int, typer.Option(
        "--min-count", min=1, max=1000,
        help="Boot at least this many servers, NAME-1 ... NAME-N: all placed on hosts, "
             "or none.")] = 1,
    max_count: Annotated[int | None, typer.Option(
        "--max-count", min=1, max=1000,
        help="Boot up to this many servers, as many as fit (at least --min-count).")
    ] = None,
    key_name: Annotated[str | None, typer.Option(
        "--key-name", help="A keypair (keypair-create) whose public key the server gets.")
    ] = None,
    user_data: Annotated[Path | None, typer.Option(
        "--user-data", metavar="FILE",
        help="cloud-init user-data (#cloud-config or a script), at most 64 KiB.")] = None,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """Boot a server with the flavor's PCI devices and one device per SR-IOV nic.

    The scheduler places it on a host whose free devices meet every request at once and
    claims them; the host's agent then starts it. When no host fits, the server is kept
    in ERROR with the reason and the command fails; with --min-count, no server is made
    at all and the command fails with the reason; with --max-count, those that fit are
    made.

    Example: boot vm1 --flavor m1.gpu --image debian --key-name mykey
    --nic net-id=prod,vnic-type=direct
    """
    from passthru.cli.nics import parse_nic  # the core's port types: only boot needs them

    body: dict[str, Any] = {"server": {
        "name": name, "flavorRef": flavor, "imageRef": image,
        "networks": [parse_nic(n) for n in nics or []], "min_count": min_count,
        "max_count": max_count, "key_name": key_name}}
    if user_data is not None:
        text = read_text(user_data, "--user-data", limit=64 * 1024)
        body["server"]["user_data"] = base64.b64encode(text.encode()).decode()
    with Client(url, token) as api:
        servers = api.call("POST", api.tenant("/servers"), json=body)["servers"]
    if max(min_count, max_count or 1) == 1:
        show(servers[0], as_json, lambda: _print_server(servers[0]))
    else:
        rows = [{**s, "devices": _devices(s)} for s in servers]
        show(servers, as_json, lambda: print_table(rows, _COLUMNS, headers=_HEADERS,
                                                   title="Servers"))
    failed = next((s for s in servers if s["status"] == "ERROR"), None)
    if failed is not None:
        raise NoCapacityError(f"server {failed['name']} could not be placed: {failed['fault']}")


def _print_server(server: dict[str, Any]) -> None:
    record = {k: v for k, v in server.items() if k not in ("pci_requests", "domain_xml")}
    print_record(record, title=f"Server {server['name']}")
    if server["pci_requests"]:
        out.print(_requests_table(server))


@command("list")
def list_servers(
    all_projects: Annotated[bool, typer.Option("--all-projects", help="(admin)")] = False,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """List this project's servers with their hosts and PCI devices."""
    with Client(url, token) as api:
        servers = api.list_all(api.tenant("/servers"), "servers",
                               {"all_projects": all_projects})
    rows = [{**s, "devices": _devices(s)} for s in servers]
    show(servers, as_json, lambda: print_table(rows, _COLUMNS, headers=_HEADERS,
                                               title="Servers"))


@command("show")
def show_server(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
                xml: Annotated[bool, typer.Option(
                    "--xml", help="Print the libvirt domain XML the host started it with."
                )] = False,
                url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Show a server: status, host, and each PCI request with its devices (host address,
    and the port it serves)."""
    with Client(url, token) as api:
        server = api.call("GET", api.tenant(f"/servers/{ref}"))["server"]
    if xml:
        if not server["domain_xml"]:
            raise ConflictError(f"server {server['name']} is {server['status']}: no host has "
                                "started it yet, so it has no domain XML")
        out.print(server["domain_xml"], markup=False, highlight=False, soft_wrap=True)
        return
    show(server, as_json, lambda: _print_server(server))


@command("delete")
def delete(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
           url: Url = None, token: Token = None) -> None:
    """Delete a server: its devices are freed and the ports its boot made are deleted."""
    with Client(url, token) as api:
        api.call("DELETE", api.tenant(f"/servers/{ref}"))
    out.print(f"deleted server {ref}", highlight=False)


def _power(ref: str, action: dict[str, Any], url: str | None, token: str | None,
           as_json: bool) -> None:
    with Client(url, token) as api:
        server = api.call("POST", api.tenant(f"/servers/{ref}/action"), json=action)["server"]
    pending = f" ({server['task_state']})" if server["task_state"] else ""
    show(server, as_json, lambda: out.print(
        f"server {server['name']}: {server['status']}{pending}", highlight=False))


@command("stop")
def stop(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
         url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Shut a server down (ACTIVE; its guest gets a minute to stop, then is powered off).
    It is SHUTOFF once its host has done it, and keeps its devices."""
    _power(ref, {"os-stop": None}, url, token, as_json)


@command("start")
def start(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
          url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Start a SHUTOFF server again, with the devices it kept."""
    _power(ref, {"os-start": None}, url, token, as_json)


@command("reboot")
def reboot(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
           hard: Annotated[bool, typer.Option(
               "--hard", help="Power-cycle the server instead of asking its guest; also "
               "starts a SHUTOFF server and rescues one stuck in REBOOT.")] = False,
           url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Reboot an ACTIVE server: REBOOT (or HARD_REBOOT) until its host has done it."""
    _power(ref, {"reboot": {"type": "HARD" if hard else "SOFT"}}, url, token, as_json)


@command("console-log")
def console_log(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
                lines: Annotated[int | None, typer.Option(
                    "--lines", min=0, help="Only the last LINES lines.")] = None,
                url: Url = None, token: Token = None) -> None:
    """Print the tail of a server's serial console log, as its host last sent it."""
    with Client(url, token) as api:
        log = api.call("GET", api.tenant(f"/servers/{ref}/console-log"),
                       params={"lines": lines} if lines is not None else None)
    out.print(log["output"], markup=False, highlight=False, emoji=False, soft_wrap=True,
              end="")
