"""`passthru pci-flavor-*`: the seed's PCI flavor verbs.

The seed's own spelling works as written, e.g.
    passthru pci-flavor-create name bigGPU description "passthrough Intel's on-die GPU"
    passthru pci-flavor-update name bigGPU set vendor_id=8086 'product_id': '0001'
next to the short one:
    passthru pci-flavor-create bigGPU --description "passthrough Intel's on-die GPU"
    passthru pci-flavor-update bigGPU set vendor_id=8086 product_id=0001
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from passthru.cli.assignments import AssignmentError, parse_assignments
from passthru.cli.nova_conf import alias_lines
from passthru.cli.options import Json, Token, Url
from passthru.cli.output import (
    command,
    err,
    out,
    print_json,
    print_record,
    print_table,
    show,
)
from passthru.client import ApiError, Client
from passthru.errors import InvalidInputError

_OWN = ("UUID", "name", "description")
_KEYWORDS = ("name", "uuid")


def _without_keyword(words: Sequence[str]) -> list[str]:
    """The seed writes `name|UUID <ref>`; the keyword is optional here."""
    if len(words) >= 2 and words[0].lower() in _KEYWORDS:
        return list(words[1:])
    return list(words)


def _spec(flavor: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flavor.items() if k not in _OWN}


def _path(api: Client, ref: str) -> str:
    return api.tenant(f"/os-pci-flavors/{ref}")


@command("pci-flavor-create")
def create(
    words: Annotated[list[str], typer.Argument(
        metavar="NAME", help="The new flavor's name (the seed's `name NAME description TEXT` "
                             "works too).")],
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Create a PCI flavor: a name users ask for, e.g. bigGPU or phyX_NIC.

    It matches every device until pci-flavor-update gives it match pairs.
    """
    words = _without_keyword(words)
    name, rest = words[0], words[1:]
    if rest[:1] == ["description"] and len(rest) == 2:
        description = rest[1]
    elif rest:
        raise AssignmentError(f"unexpected {' '.join(rest)!r}; write pci-flavor-create NAME "
                              "--description TEXT")
    with Client(url, token) as api:
        body = {"pci-flavor": {"name": name, "description": description}}
        flavor = api.call("POST", api.tenant("/os-pci-flavors"), json=body)["os-pci-flavor"]
    show(flavor, as_json, lambda: print_record(flavor, title=f"PCI flavor {name}"))


@command("pci-flavor-update")
def update(
    words: Annotated[list[str], typer.Argument(
        metavar="NAME|UUID set|unset|replace KEY=VALUE...",
        help="`set` adds or changes pairs, `unset` removes keys, `replace` makes the pairs "
             "the whole definition.")],
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Change a PCI flavor's match pairs, description or name.

    Keys are what hosts expose: vendor_id, product_id, dev_type, dev_class and extra tags
    e.* (see pci-flavor-show 0). Values are literal (8086), glob (000[1-2], gpu-*) or
    regex (re:..., or written with ( | + ^ $ as in "(1|3)"). `set description=TEXT`
    and `set name=NEW` change the flavor's own fields.

    Example: pci-flavor-update bigGPU set vendor_id=8086 product_id=0001
    """
    words = _without_keyword(words)
    if len(words) < 3 or words[1] not in ("set", "unset", "replace"):
        raise AssignmentError("write pci-flavor-update NAME set KEY=VALUE ... (or unset KEY "
                              "..., or replace KEY=VALUE ...)")
    ref, verb, rest = words[0], words[1], words[2:]
    pairs: dict[str, str | None] = (
        dict.fromkeys(rest) if verb == "unset" else dict(parse_assignments(rest)))
    body = {"action": "update" if verb == "replace" else "set", "pci-flavor": pairs}
    with Client(url, token) as api:
        flavor = api.call("PUT", _path(api, ref), json=body)["os-pci-flavor"]
    show(flavor, as_json, lambda: print_record(flavor, title=f"PCI flavor {flavor['name']}"))


@command("pci-flavor-list")
def list_flavors(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """List PCI flavors with their match pairs."""
    with Client(url, token) as api:
        flavors = api.list_all(api.tenant("/os-pci-flavors"), "os-pci-flavors")
    rows = [{**f, "spec": _spec(f)} for f in flavors]
    show(flavors, as_json, lambda: print_table(
        rows, ("name", "spec", "description", "UUID"),
        headers=("Name", "Match", "Description", "UUID"), title="PCI flavors"))


@command("pci-flavor-show")
def show_flavor(
    words: Annotated[list[str], typer.Argument(
        metavar="NAME|UUID|0", help="A PCI flavor; 0 shows the attributes hosts expose.")],
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """Show a PCI flavor; `pci-flavor-show 0` lists what hosts expose.

    The attributes hosts expose (the seed's _flavor_attrs) are the keys a PCI flavor may
    use."""
    ref = _without_keyword(words)[0]
    with Client(url, token) as api:
        flavor = api.call("GET", _path(api, ref))["os-pci-flavor"]
    show(flavor, as_json, lambda: print_record(flavor, title=f"PCI flavor {flavor['name']}"))


@command("pci-flavor-delete")
def delete(
    words: Annotated[list[str], typer.Argument(metavar="NAME|UUID")],
    url: Url = None, token: Token = None,
) -> None:
    """(admin) Delete a PCI flavor that nothing uses.

    Refused while a flavor's extra spec, an image's pci_passthrough:supported or a port
    names it."""
    ref = _without_keyword(words)[0]
    with Client(url, token) as api:
        api.call("DELETE", _path(api, ref))
    out.print(f"deleted PCI flavor {ref}", highlight=False)


@command("pci-flavor-import")
def import_aliases(
    file: Annotated[Path, typer.Argument(help="A nova.conf (or any file of alias lines).")],
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Turn nova.conf `[pci] alias = {...}` lines into PCI flavors.

    Each alias becomes a PCI flavor of the same name matching its vendor_id, product_id
    and device_type. An alias's numa_policy belongs on the flavors that use it
    (hw:pci_numa_affinity_policy); the import says so. Existing names are left alone.
    """
    from passthru.pci.flavor import parse_nova_alias  # the matching rules: re2

    try:
        text = file.read_text()
    except OSError as error:
        raise InvalidInputError(f"cannot read {file}: {error.strerror}") from None
    lines = alias_lines(text)
    if not lines:
        raise InvalidInputError(f"{file} has no alias lines in a [pci] section")
    aliases = []
    for number, line in lines:
        try:
            aliases.append(parse_nova_alias(line))
        except InvalidInputError as error:
            raise InvalidInputError(f"{file}:{number}: {error}") from None
    results = []
    with Client(url, token) as api:
        for alias in aliases:
            flavor = alias.flavor
            body = {"pci-flavor": {"name": flavor.name, "description": flavor.description,
                                   **flavor.spec}}
            try:
                api.call("POST", api.tenant("/os-pci-flavors"), json=body)
                outcome = "created"
            except ApiError as error:
                if error.status != 409:
                    raise
                outcome = "exists, left alone"
            notes = []
            if alias.numa_policy.value != "legacy":
                notes.append(f"set hw:pci_numa_affinity_policy={alias.numa_policy} on flavors "
                             f"using {flavor.name}")
            if alias.ignored:
                notes.append(f"ignored {', '.join(alias.ignored)} (Nova placement only)")
            results.append({"name": flavor.name, "spec": dict(flavor.spec),
                            "result": outcome, "notes": notes})
    if as_json:
        print_json(results)
        return
    print_table(results, ("name", "spec", "result", "notes"),
                headers=("PCI flavor", "Match", "Result", "Notes"), title=f"Imported {file}")
    if any(r["result"] != "created" for r in results):
        err.print("some names existed already; change them with pci-flavor-update",
                  highlight=False)
