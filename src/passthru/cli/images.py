"""`passthru image-*`: images and their properties."""

from __future__ import annotations

from typing import Annotated

import typer

from passthru.cli.assignments import parse_assignments
from passthru.cli.client import Client
from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, out, print_record, print_table, show


@command("image-create")
def create(
    name: Annotated[str, typer.Argument(help="e.g. cirros-0.3.1-x86_64-uec")],
    properties: Annotated[list[str] | None, typer.Option(
        "--property", metavar="KEY=VALUE",
        help="Repeatable. pci_passthrough:supported=QA1,QA3 limits the PCI flavors a boot "
             "from this image may get.")] = None,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Register an image."""
    body = {"image": {"name": name, "properties": parse_assignments(properties or [])}}
    with Client(url, token) as api:
        image = api.call("POST", api.tenant("/images"), json=body)["image"]
    show(image, as_json, lambda: print_record(image, title=f"Image {name}"))


@command("image-list")
def list_images(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """List images."""
    with Client(url, token) as api:
        images = api.call("GET", api.tenant("/images"))["images"]
    show(images, as_json, lambda: print_table(
        images, ("name", "properties", "id"), headers=("Name", "Properties", "ID"),
        title="Images"))


@command("image-show")
def show_image(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
               url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Show an image."""
    with Client(url, token) as api:
        image = api.call("GET", api.tenant(f"/images/{ref}"))["image"]
    show(image, as_json, lambda: print_record(image, title=f"Image {image['name']}"))


@command("image-delete")
def delete(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
           url: Url = None, token: Token = None) -> None:
    """(admin) Delete an image."""
    with Client(url, token) as api:
        api.call("DELETE", api.tenant(f"/images/{ref}"))
    out.print(f"deleted image {ref}", highlight=False)
