import inspect
import io
import re
from importlib import import_module

import pytest
import typer
from typer.testing import CliRunner

from passthru.cli.app import PANELS, commands
from passthru.cli.main import app


def declared() -> dict[str, str]:
    """Each declared command's first paragraph, once every module the table names has
    declared its commands."""
    for entries in PANELS.values():
        for module, _ in entries.values():
            import_module(f"passthru.cli.{module}")
    paragraphs = {}
    for info in commands.registered_commands:
        assert info.name is not None, info.callback
        text = inspect.cleandoc(info.help if info.help is not None
                                else inspect.getdoc(info.callback) or "")
        paragraphs[info.name] = " ".join(text.split("\n\n")[0].split())
    return paragraphs


def test_every_command_has_its_place_in_the_help() -> None:
    listed = [name for entries in PANELS.values() for name in entries]
    assert sorted(declared()) == sorted(listed)
    for panel, entries in PANELS.items():
        for name, (module, _) in entries.items():
            info = next(i for i in commands.registered_commands if i.name == name)
            assert info.callback.__module__ == f"passthru.cli.{module}", name
            assert info.rich_help_panel == panel, name


def test_the_table_gives_each_command_its_first_paragraph() -> None:
    paragraphs = declared()
    for entries in PANELS.values():
        for name, (_, summary) in entries.items():
            assert summary == paragraphs[name], name


def test_the_help_shows_the_groups_in_order() -> None:
    text = CliRunner().invoke(app, ["--help"], terminal_width=100).output
    positions = [text.index(panel) for panel in PANELS]
    assert positions == sorted(positions)
    names = [name for entries in PANELS.values() for name in entries]
    positions = [text.index(f"│ {name} ") for name in names]
    assert positions == sorted(positions)


def test_the_help_gives_each_command_its_first_paragraph() -> None:
    text = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    for name in [n for entries in PANELS.values() for n in entries]:
        assert f"│ {name} " in text
    assert "List this project's servers with their hosts and PCI devices." in text
    # A command's own help is typer's, with its options.
    own = CliRunner().invoke(app, ["list", "--help"], terminal_width=200).output
    assert "--all-projects" in own and "--url" in own


def test_an_unknown_command_is_refused() -> None:
    result = CliRunner().invoke(app, ["lsit"])
    assert result.exit_code == 2
    assert "No such command 'lsit'" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("passthru ")


def _as_tables(width: int) -> str:
    """The page's panels on a terminal `width` columns wide, as rich's Table draws them
    (typer's help looks so): the names in one column in bold cyan, their texts wrapped
    beside them."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    console = Console(width=width, highlight=False, emoji=False, record=True,
                      file=io.StringIO())
    group = typer.main.get_command(app)
    options = [record for param in group.get_params(typer.Context(group))
               if (record := param.get_help_record(typer.Context(group))) is not None]
    panels = [("Options", options)]
    panels += [(title, [(name, summary) for name, (_, summary) in entries.items()])
               for title, entries in PANELS.items()]
    names = max(len(name) for entries in PANELS.values() for name in entries)
    for title, rows in panels:
        table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1),
                      expand=True)
        table.add_column(style="bold cyan", no_wrap=True, width=names if title != "Options"
                         else max(len(name) for name, _ in options))
        table.add_column(ratio=10)
        for name, summary in rows:
            table.add_row(escape(name), re.sub(r"`([^`]+)`", r"[bold cyan]\1[/]",
                                               escape(summary)))
        console.print(Panel(table, box=box.ROUNDED, border_style="dim", title=title,
                            title_align="left"))
    return console.export_text()


@pytest.mark.parametrize("width", [50, 80, 100, 120, 200])
def test_the_panels_are_drawn_as_rich_tables_draw_them(width: int) -> None:
    text = CliRunner().invoke(app, ["--help"], terminal_width=width).output
    panels = text[text.index("╭─ Options"):]
    assert panels.rstrip("\n") == _as_tables(width).rstrip("\n")
