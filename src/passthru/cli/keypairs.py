"""`passthru keypair-*`: the project's SSH public keys, for `boot --key-name`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from passthru.cli.files import read_text
from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, out, print_record, print_table, show
from passthru.client import Client


@command("keypair-create")
def create(
    name: Annotated[str, typer.Argument(help="e.g. mykey")],
    public_key: Annotated[Path, typer.Option(
        "--public-key", metavar="FILE", help="An OpenSSH public key, e.g. "
        "~/.ssh/id_ed25519.pub (ssh-ed25519, ssh-rsa or ecdsa-sha2-*).")],
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """Import an SSH public key; boot --key-name NAME puts it into the server."""
    body = {"keypair": {"name": name,
                        "public_key": read_text(public_key, "--public-key", limit=16384)}}
    with Client(url, token) as api:
        keypair = api.call("POST", api.tenant("/os-keypairs"), json=body)["keypair"]
    show(keypair, as_json, lambda: print_record(keypair, title=f"Keypair {name}"))


@command("keypair-list")
def list_keypairs(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """List the project's keypairs with their fingerprints."""
    with Client(url, token) as api:
        keypairs = [k["keypair"] for k in api.list_all(api.tenant("/os-keypairs"), "keypairs")]
    show(keypairs, as_json, lambda: print_table(
        keypairs, ("name", "type", "fingerprint"), headers=("Name", "Type", "Fingerprint"),
        title="Keypairs"))


@command("keypair-delete")
def delete(name: Annotated[str, typer.Argument(metavar="NAME")],
           url: Url = None, token: Token = None) -> None:
    """Delete a keypair (servers booted with it keep the key)."""
    with Client(url, token) as api:
        api.call("DELETE", api.tenant(f"/os-keypairs/{name}"))
    out.print(f"deleted keypair {name}", highlight=False)
