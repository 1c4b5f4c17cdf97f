"""The `passthru` program. Command modules declare their commands on `commands`.

Start-up is part of every command's latency, so the program does at start only what the
command line in hand needs. Typer turns a command's signature into click parameters
(reading its type hints) when the program's click group is built, for every command at
once: here the root group converts a command only when it is looked up, so `passthru
list` converts `list` alone. `passthru --help` converts none: it lists each command's
first paragraph in its panel, drawn with rich directly rather than by typer's rich help
module, which loads a Markdown parser and a traceback renderer to show one page. A
command's own `--help` is typer's. Heavy parts (the store, the web stack, the host side)
are imported inside the commands that use them; `tests/cli/test_import_weight.py`
guards that.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from typer.core import TyperGroup
from typer.main import get_command_from_info
from typer.models import CommandInfo

#: The commands, declared with Typer's decorators; the root group converts them lazily.
commands = typer.Typer()

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

#: An inline `code` span in a help text, shown as typer's Markdown mode shows it.
_CODE = re.compile(r"`([^`]+)`")


def panel_of(command: str) -> str | None:
    return next((panel for panel, names in PANELS.items() if command in names), None)


def arrange() -> None:
    """Order the declared commands as PANELS lists them."""
    order = {name: i for i, name in enumerate(n for names in PANELS.values() for n in names)}
    commands.registered_commands.sort(
        key=lambda command: order.get(command.name or "", len(order)))


class _Converted(MutableMapping[str, Any]):
    """The declared commands by name, each converted to a click command when first asked
    for."""

    def __init__(self, markup_mode: Any) -> None:
        self._markup_mode = markup_mode
        self._done: dict[str, Any] = {}

    def _declared(self) -> dict[str, CommandInfo]:
        return {info.name: info for info in commands.registered_commands if info.name}

    def __getitem__(self, name: str) -> Any:
        if name not in self._done:
            self._done[name] = get_command_from_info(
                self._declared()[name], pretty_exceptions_short=False,
                rich_markup_mode=self._markup_mode)
        return self._done[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._done[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("passthru's commands are declared on passthru.cli.app.commands")

    def __iter__(self) -> Iterator[str]:
        return iter(self._declared())

    def __len__(self) -> int:
        return len(self._declared())


class _Root(TyperGroup):
    """The program's group: its commands converted on demand, its help drawn light."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Converted(self.rich_markup_mode)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(self.commands)

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        # Typer's look (rich_utils' styles), so that the page reads as every command's.
        console = Console(highlight=False, width=ctx.terminal_width)
        console.print(Padding(f"[bold]{escape(self.get_usage(ctx))}[/]", 1))
        if self.help:
            text = "\n\n".join(" ".join(paragraph.split())
                               for paragraph in inspect.cleandoc(self.help).split("\n\n"))
            console.print(Padding(escape(text), (0, 1, 1, 1)))
        options = [record for param in self.get_params(ctx)
                   if (record := param.get_help_record(ctx)) is not None]
        console.print(_panel("Options", [(names, escape(text)) for names, text in options],
                             max(len(names) for names, _ in options)))
        declared = [info for info in commands.registered_commands
                    if info.name and not info.hidden]
        width = max(len(info.name or "") for info in declared)  # one column for all panels
        for title in dict.fromkeys(info.rich_help_panel or "Commands" for info in declared):
            console.print(_panel(title, [
                (info.name or "", _summary(info)) for info in declared
                if (info.rich_help_panel or "Commands") == title], width))


def _summary(info: CommandInfo) -> str:
    """A command's first paragraph, as Rich markup."""
    text = inspect.cleandoc(info.help if info.help is not None
                            else inspect.getdoc(info.callback) or "")
    first = " ".join(text.split("\n\n")[0].split())
    return _CODE.sub(r"[bold cyan]\1[/]", escape(first))


def _panel(title: str, rows: list[tuple[str, str]], width: int) -> Panel:
    table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1), expand=True)
    table.add_column(style="bold cyan", no_wrap=True, width=width)
    table.add_column(ratio=10)
    for name, text in rows:
        table.add_row(escape(name), text)
    return Panel(table, box=box.ROUNDED, border_style="dim", title=title, title_align="left")


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
    across a cluster of KVM/libvirt hosts."""
