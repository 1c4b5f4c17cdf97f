"""The `passthru` program. Command modules register themselves on `app`."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="passthru",
    help=(
        "Give virtual machines real PCI devices (GPUs, crypto cards, NVMe, SR-IOV VFs) "
        "across a cluster of KVM/libvirt hosts."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

#: `passthru --help` lists the commands in these groups, in this order.
PANELS: dict[str, tuple[str, ...]] = {
    "Start here": ("demo", "sim", "discover"),
    "Run passthru": ("serve", "agent", "host-token", "token-create", "token-list",
                     "token-revoke", "admin-token-rotate", "prune"),
    "PCI flavors (operator)": ("pci-flavor-create", "pci-flavor-update", "pci-flavor-list",
                               "pci-flavor-show", "pci-flavor-delete", "pci-flavor-import"),
    "Flavors, images, networks (operator)": (
        "flavor-create", "flavor-key", "flavor-list", "flavor-show", "flavor-delete",
        "image-create", "image-list", "image-show", "image-delete",
        "net-create", "net-list", "net-show", "net-delete"),
    "Servers and ports": ("boot", "list", "show", "stop", "start", "reboot", "console-log",
                          "delete", "port-create", "port-list", "port-show", "port-delete",
                          "keypair-create", "keypair-list", "keypair-delete"),
    "The fleet (operator)": ("host-list", "pci-device-list", "pci-stats", "events"),
}


def panel_of(command: str) -> str | None:
    return next((panel for panel, names in PANELS.items() if command in names), None)


def arrange() -> None:
    """Order the registered commands as PANELS lists them (Typer shows panels in the
    order of their first command)."""
    order = {name: i for i, name in enumerate(n for names in PANELS.values() for n in names)}
    app.registered_commands.sort(key=lambda command: order.get(command.name or "", len(order)))
