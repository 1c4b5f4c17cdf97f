"""`passthru host-token`, `token-create`, `token-list` and `token-revoke`: tokens for
agents and project members, what they are for, and ending them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import typer

from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, err, out, print_json, print_table, show
from passthru.client import ApiError, Client
from passthru.controller.enums import Role

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw]?)")


def duration(text: str) -> int:
    """Seconds in '90d', '12h', '30m', '2w' or a plain number of seconds."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise typer.BadParameter(f"{text!r} is not a duration: give a number with s, m, h, "
                                 "d or w (e.g. 90d, 12h), or seconds")
    return int(found[1]) * _UNITS[found[2] or "s"]


Name = Annotated[str | None, typer.Option(
    "--name", help="What the token is for (shown by token-list), e.g. ci or rack-4.")]
ExpiresIn = Annotated[int | None, typer.Option(
    "--expires-in", parser=duration, metavar="DURATION", show_default="never",
    help="The token stops working after this long: 90d, 12h, 30m, 2w, or seconds.")]


def _options(name: str | None, expires_in: int | None) -> dict[str, Any]:
    options = {"name": name, "expires_in": expires_in}
    return {key: value for key, value in options.items() if value is not None}


def _print_issued(issued: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(issued)
    else:
        out.print(issued["token"], highlight=False)


@command("host-token")
def host_token(
    host: Annotated[str, typer.Argument(help="The host the agent runs on (its config's host).")],
    name: Name = None, expires_in: ExpiresIn = None,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Print a new agent token that can report only HOST.

    Put it in the host's agent config (token = "...") or its PASSTHRU_TOKEN. The
    controller keeps only a digest: this is the one time the token is shown.
    """
    with Client(url, token) as api:
        issued = api.call("POST", api.tenant(f"/os-hosts/{host}/tokens"),
                          json={"token": _options(name, expires_in)})
    _print_issued(issued, as_json)


@command("token-create")
def token_create(
    project: Annotated[str, typer.Option("--project", help="The member's project.")],
    name: Name = None, expires_in: ExpiresIn = None,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Print a new token for a member of PROJECT.

    Members boot, list and delete their project's servers and ports, and read the
    catalog (flavors, images, networks, PCI flavors). The token is shown only once.
    """
    with Client(url, token) as api:
        issued = api.call("POST", api.tenant("/tokens"), json={
            "token": {"project": project, **_options(name, expires_in)}})
    _print_issued(issued, as_json)


def _when(timestamp: str | None, never: str) -> str:
    if timestamp is None:
        return never
    return datetime.fromisoformat(timestamp).strftime("%Y-%m-%d %H:%M:%S")


@command("token-list")
def token_list(
    role: Annotated[Role | None, typer.Option("--role", help="Only tokens of this role.")
                    ] = None,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) List every token: its id (for token-revoke), name, role, project or host,
    when it was issued and when it expires. Tokens themselves are never shown again."""
    with Client(url, token) as api:
        tokens = api.list_all(api.tenant("/tokens"), "tokens",
                              {"role": role.value} if role else None)
    rows = [{**t, "bound": t["host"] if t["role"] == Role.AGENT else t["project"],
             "created": _when(t["created_at"], "-"),
             "expires": _when(t["expires_at"], "never") + (" (expired)" if t["expired"] else "")}
            for t in tokens]
    show(tokens, as_json, lambda: print_table(
        rows, ("id", "name", "role", "bound", "created", "expires"),
        headers=("ID", "Name", "Role", "Project / host", "Created (UTC)", "Expires (UTC)"),
        title="Tokens"))


@command("token-revoke")
def token_revoke(
    ids: Annotated[list[int], typer.Argument(metavar="ID...",
                                             help="The tokens' ids, as token-list shows.")],
    url: Url = None, token: Token = None,
) -> None:
    """(admin) Revoke tokens: each stops working at once, on every controller replica.

    The last admin token cannot be revoked; replace it with passthru admin-token-rotate.
    """
    refused: list[ApiError] = []
    with Client(url, token) as api:
        for token_id in ids:
            try:
                api.call("DELETE", api.tenant(f"/tokens/{token_id}"))
            except ApiError as error:
                refused.append(error.restated(f"token {token_id}: {error}"))
                continue
            err.print(f"revoked token {token_id}", highlight=False)
    if refused:  # exits as the first refusal does
        raise ApiError("; ".join(map(str, refused)), refused[0].status, refused[0].kind)
