"""`passthru host-token` and `token-create`: tokens for agents and project members."""

from __future__ import annotations

from typing import Annotated

import typer

from passthru.cli.client import Client
from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, out, print_json


@command("host-token")
def host_token(
    host: Annotated[str, typer.Argument(help="The host the agent runs on (its config's host).")],
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Print a new agent token that can report only HOST.

    Put it in the host's agent config (token = "...") or its PASSTHRU_TOKEN. The
    controller keeps only a digest: this is the one time the token is shown.
    """
    with Client(url, token) as api:
        issued = api.call("POST", api.tenant(f"/os-hosts/{host}/tokens"))
    if as_json:
        print_json(issued)
    else:
        out.print(issued["token"], highlight=False)


@command("token-create")
def token_create(
    project: Annotated[str, typer.Option("--project", help="The member's project.")],
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Print a new token for a member of PROJECT.

    Members boot, list and delete their project's servers and ports, and read the
    catalog (flavors, images, networks, PCI flavors). The token is shown only once.
    """
    with Client(url, token) as api:
        issued = api.call("POST", api.tenant("/tokens"), json={"token": {"project": project}})
    if as_json:
        print_json(issued)
    else:
        out.print(issued["token"], highlight=False)
