"""The `passthru` program. Command modules declare their commands on `commands`.

Start-up is part of every command's latency, so the program does at start only what the
command line in hand needs. The root group knows every command from the PANELS table
(its module and its one-line help) and imports a command's module only when that command
is looked up, so `passthru list` imports the servers' module alone and converts `list`
alone (Typer turns a command's signature into click parameters when the click group is
built, for every command at once; here that is done for the command in hand).
`passthru --help` imports and converts none: it lists each command's one-line help from
the table in its panel, drawn with rich directly rather than by typer's rich help
module, which loads a Markdown parser and a traceback renderer to show one page. A
command's own `--help` is typer's. Heavy parts (the store, the web stack, the host side)
are imported inside the commands that use them; `tests/cli/test_import_weight.py`
guards that.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, MutableMapping
from importlib import import_module
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info

#: The commands, declared with Typer's decorators; the root group converts them lazily.
commands = typer.Typer()

#: `passthru --help` lists the commands in these groups, in this order: each command with
#: the module of passthru.cli that declares it, and its one-line help (the first paragraph
#: of the command's help; tests/cli/test_help.py holds the two to agreeing). The page is
#: drawn from this table, so it imports no command module; a command's module is imported
#: when that command is looked up.
PANELS: dict[str, dict[str, tuple[str, str]]] = {
    "Start here": {
        "demo": ("demo",
                 "Start a passthru cluster on this machine and walk the seed's use cases on it."),
        "sim": ("sim",
                "Build a simulated host of real PCI hardware, to try host configs without it."),
        "discover": ("discover",
                     "Show what this host would offer for passthrough, without contacting the "
                     "controller."),
    },
    "Run passthru": {
        "serve": ("serve", "Run the controller (REST API; its description at /openapi.json)."),
        "agent": ("agent",
                  "Report this host's PCI devices, CPUs, memory and disk to the controller and "
                  "keep the report current."),
        "host-token": ("tokens", "(admin) Print a new agent token that can report only HOST."),
        "token-create": ("tokens", "(admin) Print a new token for a member of PROJECT."),
        "token-list": ("tokens",
                       "(admin) List every token: its id (for token-revoke), name, role, project "
                       "or host, when it was issued and when it expires. Tokens themselves are "
                       "never shown again."),
        "token-revoke": ("tokens",
                         "(admin) Revoke tokens: each stops working at once, on every controller "
                         "replica."),
        "admin-token-rotate": ("maintenance",
                               "Replace the admin token of the data dir by a new one: the old one"
                               " stops working at once, on every controller replica."),
        "prune": ("maintenance",
                  "Prune the store now, as the controller does every hour: deleted servers that "
                  "left their host, events past their age or count, agents' old answers, and "
                  "tokens that expired long ago."),
    },
    "PCI flavors (operator)": {
        "pci-flavor-create": ("pci_flavors",
                              "(admin) Create a PCI flavor: a name users ask for, e.g. bigGPU or "
                              "phyX_NIC."),
        "pci-flavor-update": ("pci_flavors",
                              "(admin) Change a PCI flavor's match pairs, description or name."),
        "pci-flavor-list": ("pci_flavors", "List PCI flavors with their match pairs."),
        "pci-flavor-show": ("pci_flavors",
                            "Show a PCI flavor; `pci-flavor-show 0` lists what hosts expose."),
        "pci-flavor-delete": ("pci_flavors", "(admin) Delete a PCI flavor that nothing uses."),
        "pci-flavor-import": ("pci_flavors",
                              "(admin) Turn nova.conf `[pci] alias = {...}` lines into PCI "
                              "flavors."),
    },
    "Flavors, images, networks (operator)": {
        "flavor-create": ("flavors",
                          "(admin) Create a flavor. Give it PCI devices with flavor-key."),
        "flavor-key": ("flavors", "(admin) Set or unset a flavor's extra specs."),
        "flavor-list": ("flavors", "List flavors with their extra specs."),
        "flavor-show": ("flavors", "Show a flavor and its extra specs."),
        "flavor-delete": ("flavors", "(admin) Delete a flavor that no server uses."),
        "image-create": ("images",
                         "(admin) Register an image, and upload its disk (and kernel, initrd) "
                         "when given."),
        "image-list": ("images", "List images."),
        "image-show": ("images",
                       "Show an image: status, format, virtual size, checksum and files."),
        "image-delete": ("images",
                         "(admin) Delete an image and its files (refused while a server uses it)."),
        "net-create": ("networks", "(admin) Create a provider network for SR-IOV ports."),
        "net-list": ("networks", "List the networks this project can use."),
        "net-show": ("networks", "Show a network."),
        "net-delete": ("networks", "(admin) Delete a network; refused while it has ports."),
    },
    "Servers and ports": {
        "boot": ("servers",
                 "Boot a server with the flavor's PCI devices and one device per SR-IOV nic."),
        "list": ("servers", "List this project's servers with their hosts and PCI devices."),
        "show": ("servers",
                 "Show a server: status, host, and each PCI request with its devices (host "
                 "address, and the port it serves)."),
        "stop": ("servers",
                 "Shut a server down (ACTIVE; its guest gets a minute to stop, then is powered "
                 "off). It is SHUTOFF once its host has done it, and keeps its devices."),
        "start": ("servers", "Start a SHUTOFF server again, with the devices it kept."),
        "reboot": ("servers",
                   "Reboot an ACTIVE server: REBOOT (or HARD_REBOOT) until its host has done it."),
        "console-log": ("servers",
                        "Print the tail of a server's serial console log, as its host last sent "
                        "it."),
        "delete": ("servers",
                   "Delete a server: its devices are freed and the ports its boot made are "
                   "deleted."),
        "port-create": ("ports", "Create a port on NET for this project."),
        "port-list": ("ports", "List this project's ports."),
        "port-show": ("ports", "Show a port with its binding."),
        "port-delete": ("ports", "Delete a port; refused while a server uses it."),
        "keypair-create": ("keypairs",
                           "Import an SSH public key; boot --key-name NAME puts it into the "
                           "server."),
        "keypair-list": ("keypairs", "List the project's keypairs with their fingerprints."),
        "keypair-delete": ("keypairs", "Delete a keypair (servers booted with it keep the key)."),
    },
    "The fleet (operator)": {
        "host-list": ("hosts",
                      "(admin) List hosts: up or down, last heart-beat, devices and how many are "
                      "free, and the vCPUs, memory (MiB) and disk (GB) VMs use of each host's "
                      "capacity."),
        "pci-device-list": ("hosts", "(admin) List PCI devices with their status, owner and "
                                     "taint."),
        "pci-device-set": ("hosts", "(admin) Taint a PCI device (no new VM is given it) or "
                                    "clear its taint."),
        "pci-stats": ("hosts",
                      "(admin) PCI stats: each host's pools with their attributes, free and used "
                      "counts."),
        "events": ("events",
                   "(admin) List events, newest first: claims and frees of devices, servers "
                   "created and deleted, devices added or removed by agents, hosts going down and"
                   " up."),
    },
}

#: An inline `code` span in a help text, shown as typer's Markdown mode shows it.
_CODE = re.compile(r"`([^`]+)`")


def panel_of(command: str) -> str | None:
    return next((panel for panel, entries in PANELS.items() if command in entries), None)


#: Each command's module, from PANELS.
_MODULES = {name: module for entries in PANELS.values()
            for name, (module, _) in entries.items()}


class _Converted(MutableMapping[str, Any]):
    """The commands by name, in PANELS' order, each converted to a click command when first
    asked for, once its module has declared it."""

    def __init__(self, markup_mode: Any) -> None:
        self._markup_mode = markup_mode
        self._done: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._done:
            import_module(f"passthru.cli.{_MODULES[name]}")
            declared = next(info for info in commands.registered_commands
                            if info.name == name)
            self._done[name] = get_command_from_info(
                declared, pretty_exceptions_short=False, rich_markup_mode=self._markup_mode)
        return self._done[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._done[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("passthru's commands are declared on passthru.cli.app.commands")

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


class _Root(TyperGroup):
    """The program's group: its commands imported and converted on demand, its help drawn
    light."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Converted(self.rich_markup_mode)

    # The base classes name the Context of the click that typer vendors privately; typer
    # hands these a typer.Context, its public subclass.
    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return list(self.commands)

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:  # type: ignore[override]
        from rich.console import Console
        from rich.markup import escape
        from rich.padding import Padding

        # Typer's look (rich_utils' styles), so that the page reads as every command's.
        # No emoji codes in help texts: their table (a large module) is not loaded.
        console = Console(highlight=False, emoji=False, width=ctx.terminal_width)
        console.print(Padding(f"[bold]{escape(self.get_usage(ctx))}[/]", 1))
        if self.help:
            text = "\n\n".join(" ".join(paragraph.split())
                               for paragraph in inspect.cleandoc(self.help).split("\n\n"))
            console.print(Padding(escape(text), (0, 1, 1, 1)))
        options = [record for param in self.get_params(ctx)
                   if (record := param.get_help_record(ctx)) is not None]
        console.print(_panel(console, "Options", [(names, _styled(text, code=False))
                                                  for names, text in options],
                             max(len(names) for names, _ in options)))
        width = max(map(len, _MODULES))  # one column for all panels
        for title, entries in PANELS.items():
            console.print(_panel(console, title, [
                (name, _styled(summary)) for name, (_, summary) in entries.items()], width))


def _styled(text: str, *, code: bool = True) -> Any:
    """A help text as rich Text, with its `code` spans in bold cyan as typer's Markdown mode
    shows them (split out here, not parsed as markup)."""
    from rich.text import Text

    parts = _CODE.split(text) if code else [text]  # odd items are the spans' contents
    return Text.assemble(*((part, "bold cyan") if i % 2 else part
                           for i, part in enumerate(parts)))


def _panel(console: Any, title: str, rows: list[tuple[str, Any]], width: int) -> Any:
    """A titled box of two columns: names (`width` wide, bold cyan) and their texts,
    wrapped to the console. It draws what a borderless rich Table of those two columns
    draws (padding (0, 1), no edge padding, expanded), as lines of text: the Table
    measured every cell to draw the same page, which took half of `--help`'s time
    (tests/cli/test_help.py compares the two)."""
    from rich import box
    from rich.panel import Panel
    from rich.text import Text

    # The panel's borders and padding, the names' column and the gap between the two.
    room = max(console.width - 4 - width - 2, 1)
    lines: list[Text] = []
    for name, text in rows:
        wrapped = ([text] if text.cell_len <= room
                   else text.wrap(console, room, overflow="ellipsis"))
        for i, line in enumerate(wrapped):
            label = name if i == 0 else ""
            lines.append(Text.assemble((label.ljust(width) + " ", "bold cyan"), " ", line))
    return Panel(Text("\n").join(lines), box=box.ROUNDED, border_style="dim", title=title,
                 title_align="left")


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"passthru {version('passthru')}")
        raise typer.Exit


app = typer.Typer(
    name="passthru",
    cls=_Root,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print passthru's version and exit.")] = False,
) -> None:
    """Give virtual machines real PCI devices (GPUs, crypto cards, NVMe, SR-IOV VFs)
    across a cluster of KVM/libvirt hosts.

    Exit status: 0 done; 2 invalid input or usage; 3 not found; 4 a conflict with the
    stored state, or a state that does not allow it; 5 no host has the capacity; 6 no
    token, or an unknown one; 7 the token may not do it; 8 a host-side failure (sysfs,
    libvirt, netlink); 9 the controller cannot be reached now; 1 anything else."""
