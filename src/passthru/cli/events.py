"""`passthru events`: what happened to devices, servers and hosts, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, print_table, show
from passthru.client import Client
from passthru.controller.enums import EventKind

_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def _row(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the table shows it: the time to the second, the server by name."""
    time = datetime.fromisoformat(event["time"]).strftime("%Y-%m-%d %H:%M:%S")
    return {**event, "time": time, "server": event["server_name"] or event["server"]}


@command("events")
def events(
    host: Annotated[str | None, typer.Option("--host", help="Only this host's events.")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", metavar="ADDRESS",
        help="Only this PCI address (e.g. 0000:3b:02.1), on any host unless --host is "
             "given.")] = None,
    server: Annotated[str | None, typer.Option(
        "--server", help="Only this server, by UUID or name.")] = None,
    kind: Annotated[list[EventKind] | None, typer.Option(
        "--kind", metavar="KIND", show_choices=False,
        help="Only this kind (repeatable): "
             + ", ".join(kind.value for kind in EventKind) + ".")] = None,
    since: Annotated[datetime | None, typer.Option(
        "--since", formats=_FORMATS, metavar="TIME",
        help="Only at or after this time: YYYY-MM-DD or YYYY-MM-DD HH:MM:SS, in UTC.")] = None,
    until: Annotated[datetime | None, typer.Option(
        "--until", formats=_FORMATS, metavar="TIME", help="Only before this time.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000,
                                       help="At most this many events.")] = 50,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) List events, newest first: claims and frees of devices, servers created
    and deleted, devices added or removed by agents, hosts going down and up.

    Who had a VF and when: `passthru events --device 0000:3b:02.1 --kind device-claimed
    --kind device-freed`.
    """
    params: dict[str, Any] = {"host": host, "device": device, "server": server, "kind": kind,
                              "since": since.isoformat() if since else None,
                              "until": until.isoformat() if until else None}
    with Client(url, token) as api:
        found = api.list_all(api.tenant("/os-events"), "events",
                             {k: v for k, v in params.items() if v}, limit=limit)
    show(found, as_json, lambda: print_table(
        [_row(event) for event in found],
        ("time", "kind", "host", "device", "server", "message"),
        headers=("Time (UTC)", "Kind", "Host", "Device", "Server", "Message"),
        title="Events (newest first)"))
