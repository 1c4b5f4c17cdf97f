"""`passthru flavor-*`: flavors and the extra specs that ask for PCI devices."""

from __future__ import annotations

from typing import Annotated

import typer

from passthru.cli.assignments import AssignmentError, parse_assignments
from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, out, print_record, print_table, show
from passthru.client import Client


def _path(api: Client, ref: str, tail: str = "") -> str:
    return api.tenant(f"/flavors/{ref}{tail}")


@command("flavor-create")
def create(
    name: Annotated[str, typer.Argument(help="e.g. m1.gpu")],
    vcpus: Annotated[int, typer.Option("--vcpus", min=1)] = 1,
    ram: Annotated[int, typer.Option("--ram", min=1, help="MiB")] = 512,
    disk: Annotated[int, typer.Option("--disk", min=0, help="GiB")] = 0,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Create a flavor. Give it PCI devices with flavor-key."""
    body = {"flavor": {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk}}
    with Client(url, token) as api:
        flavor = api.call("POST", api.tenant("/flavors"), json=body)["flavor"]
    show(flavor, as_json, lambda: print_record(flavor, title=f"Flavor {name}"))


@command("flavor-key")
def key(
    words: Annotated[list[str], typer.Argument(
        metavar="NAME set|unset KEY=VALUE...", help="`set` adds or changes extra specs, "
        "`unset` removes keys.")],
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Set or unset a flavor's extra specs.

    PCI devices are asked for with the seed's spec, COUNT:PCI_FLAVOR[,ALTERNATIVE...]
    separated by ';' (a count of 1 may be left out), e.g.

        flavor-key m1.gpu set pci_passthrough:pci_flavor='1:bigGPU,bigGPU2;1:QA'

    (one bigGPU or bigGPU2, and one QA). Nova's pci_passthrough:alias='QA:2' works
    too, and hw:pci_numa_affinity_policy=required|preferred|legacy|socket sets NUMA
    affinity. Specs naming unknown PCI flavors are refused.
    """
    if len(words) < 3 or words[1] not in ("set", "unset"):
        raise AssignmentError("write flavor-key NAME set KEY=VALUE ... or flavor-key NAME "
                              "unset KEY ...")
    ref, verb, rest = words[0], words[1], words[2:]
    with Client(url, token) as api:
        if verb == "set":
            specs = api.call("POST", _path(api, ref, "/os-extra_specs"),
                             json={"extra_specs": parse_assignments(rest)})["extra_specs"]
        else:
            for name in rest:
                api.call("DELETE", _path(api, ref, f"/os-extra_specs/{name}"))
            specs = api.call("GET", _path(api, ref, "/os-extra_specs"))["extra_specs"]
    show(specs, as_json, lambda: print_record(specs, title=f"Extra specs of {ref}"))


@command("flavor-list")
def list_flavors(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """List flavors with their extra specs."""
    with Client(url, token) as api:
        flavors = api.list_all(api.tenant("/flavors"), "flavors")
    show(flavors, as_json, lambda: print_table(
        flavors, ("name", "vcpus", "ram", "disk", "extra_specs", "id"),
        headers=("Name", "vCPUs", "RAM MiB", "Disk GiB", "Extra specs", "ID"),
        title="Flavors"))


@command("flavor-show")
def show_flavor(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
                url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Show a flavor and its extra specs."""
    with Client(url, token) as api:
        flavor = api.call("GET", _path(api, ref))["flavor"]
    show(flavor, as_json, lambda: print_record(flavor, title=f"Flavor {flavor['name']}"))


@command("flavor-delete")
def delete(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
           url: Url = None, token: Token = None) -> None:
    """(admin) Delete a flavor that no server uses."""
    with Client(url, token) as api:
        api.call("DELETE", _path(api, ref))
    out.print(f"deleted flavor {ref}", highlight=False)
